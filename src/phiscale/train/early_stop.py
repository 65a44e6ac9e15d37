"""Early stopping of a sweep's run without a controller: at each rung epoch, ask the stage's ASHA rule.

At the end of the validation of a rung epoch r (a stage's `early_stop.rungs`), rank 0 logs its
value as `rung/<r>/<metric>`, waits (at most `sweep.early_stop.wait_s`) until MLflow holds it, reads
that metric of every run of its stage (tags `phiscale.sweep_id`, `phiscale.stage`, one search_runs
call), and asks `sweeps.pruning.judge`. Pruned, it tags the run `phiscale.pruned=<r>` and stops
after this epoch like a finished run (the run ends FINISHED; `phiscale-sweep status` counts it as
pruned, `resume` leaves it). MLflow unreachable: the run continues and says so in one line.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L

from phiscale.sweeps.pruning import PRUNED_TAG, EarlyStop, judge, rung_key
from phiscale.sweeps.record import STAGE_TAG, SWEEP_ID_TAG


def stage_values(tracking_uri: str, experiment: str, sweep_id: str, stage: str | None, key: str,
                 exclude: str | None) -> list[float]:
    """`key` of every run of the stage that has it (the latest attempt of each point), but run `exclude`."""
    from phiscale.tracking.store import client

    mlflow = client(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    where = f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}'" + (f" and tags.`{STAGE_TAG}` = '{stage}'" if stage else "")
    latest: dict[str, Any] = {}
    token = None
    while True:
        page = mlflow.search_runs([found.experiment_id], filter_string=where, max_results=1000, page_token=token)
        for run in page:
            index = run.data.tags.get("sweep_index", run.info.run_id)
            if index not in latest or (run.info.start_time or 0) > (latest[index].info.start_time or 0):
                latest[index] = run
        token = page.token
        if not token:
            break
    return [run.data.metrics[key] for run in latest.values() if run.info.run_id != exclude and key in run.data.metrics]


class AshaEarlyStop(L.Callback):
    """See the module docstring; `rule` is the stage's early_stop, the rest says where its runs are."""

    def __init__(self, rule: EarlyStop, *, tracking_uri: str, experiment: str, sweep_id: str, stage: str | None,
                 wait_s: float = 30.0, echo=print) -> None:
        self.rule, self.uri, self.experiment = rule, tracking_uri, experiment
        self.sweep_id, self.stage, self.wait_s, self.echo = sweep_id, stage, wait_s, echo
        self.pruned_at: int | None = None
        self.judged: set[int] = set()  # rungs asked at already (several validations per epoch ask once)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rung = trainer.current_epoch + 1
        if trainer.sanity_checking or rung not in self.rule.rungs or rung in self.judged or self.pruned_at:
            return
        self.judged.add(rung)
        keep = True
        if trainer.is_global_zero:
            keep = self._ask(trainer, rung)
        keep = trainer.strategy.broadcast(keep, src=0)
        if not keep:
            self.pruned_at = rung
            trainer.should_stop = True

    def _ask(self, trainer: L.Trainer, rung: int) -> bool:
        metric = self.rule.metric
        value = trainer.callback_metrics.get(metric)
        if value is None:
            self.echo(f"phiscale: rung {rung}: no {metric} this epoch (logged: {sorted(trainer.callback_metrics)}); "
                      "the run continues (fix sweep.early_stop.metric)")
            return True
        value = float(value)
        key = rung_key(metric, rung)
        logger = trainer.logger
        logger.log_metrics({key: value}, step=trainer.global_step)
        sent = logger.wait_sent(self.wait_s) if hasattr(logger, "wait_sent") else False
        try:
            others = stage_values(self.uri, self.experiment, self.sweep_id, self.stage, key, exclude=logger.run_id)
        except Exception as err:  # any failure of the store: never prune on missing data
            from phiscale.tracking.store import describe_error

            self.echo(f"phiscale: rung {rung}: MLflow at {self.uri} unreachable ({describe_error(err)}); "
                      f"the run continues (never pruned on missing data)")
            return True
        if not sent:
            self.echo(f"phiscale: rung {rung}: this run's {key} is not in MLflow yet after {self.wait_s:g} s; "
                      "judged on the values there and its own")
        verdict = judge(value, others, rung=rung, mode=self.rule.mode, eta=self.rule.eta)
        self.echo(f"phiscale: {verdict.line(metric)}")
        if not verdict.keep:
            logger.set_tags({PRUNED_TAG: str(rung)})
        return verdict.keep


def asha_callbacks(cfg: Any, tracking_uri: str | None) -> list[AshaEarlyStop]:
    """The early stopping a run's config asks for (`sweep.early_stop.metric` and rungs set), else none;
    the store is the run logger's (`tracking_uri`), else the config's."""
    spec = cfg.sweep.get("early_stop") if cfg.get("sweep") is not None else None
    if not spec or not spec.get("metric") or not spec.get("rungs"):
        return []
    if tracking_uri is None:
        from phiscale.tracking.store import normalize_tracking_uri

        tracking_uri = normalize_tracking_uri(str(cfg.tracking.uri))
    if not cfg.sweep.get("id"):
        from phiscale.errors import PhiscaleError

        raise PhiscaleError(f"sweep.early_stop.metric={spec.metric} needs a recorded sweep (sweep.id); "
                            "submit it with `phiscale-sweep submit`, or drop sweep.early_stop")
    rule = EarlyStop(str(spec.metric), str(spec.mode), tuple(int(r) for r in spec.rungs), float(spec.eta))
    wait_s = float(spec.get("wait_s", 30.0))
    return [AshaEarlyStop(rule, tracking_uri=tracking_uri, experiment=str(cfg.tracking.experiment),
                          sweep_id=str(cfg.sweep.id), stage=cfg.sweep.get("stage"), wait_s=wait_s)]


__all__ = ["AshaEarlyStop", "asha_callbacks", "stage_values"]
