"""The search's winner, picked once when the scale stage's first run starts, and what it hands on.

Every run of the scale stage asks `run_overrides` before it composes its config; the first one (under
a lock on the record's dir, so two tasks starting together pick once) reads the search's runs from
MLflow and records the winner in sweep.json: its run id, the overrides it hands on (its
model.alpha, model.beta, model.gamma as it trained them), the metric, the mode and every value it
was chosen from. The best `select.metric` wins (with seeds: the best point by its mean); a tie goes
to fewer MACs, then to the lower index. Pruned runs never win (they did not train to the end). With
no finished point the study stops: one line in the record (`stopped`), a tag and the FAILED status on
the parent, and each scale run refuses to start with that line.
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import Any

from phiscale.errors import PhiscaleError
from phiscale.sweeps.pruning import PRUNED_TAG
from phiscale.sweeps.record import STOPPED_TAG, WINNER_TAG, SweepRecord, locked, now_iso, quote_value
from phiscale.sweeps.study import CARRIED

MACS = "model/macs_eval"


def run_overrides(record: SweepRecord, index: int) -> list[str]:
    """Run `index`'s overrides before the command line's: its point's, then (a scale run) the winner's."""
    point = record.point(index)
    stage = record.stage(point.stage) or {}
    if not stage.get("from"):
        return list(point.overrides)
    chosen = ensure_winner(record)
    if chosen.winner is None:
        raise PhiscaleError(f"study {record.id} stopped: {chosen.stopped}")
    return [*point.overrides, *chosen.winner["overrides"]]


def ensure_winner(record: SweepRecord) -> SweepRecord:
    """The record with its winner (or its reason to stop), choosing it now if nobody has."""
    if record.winner is not None:
        return record
    with locked(record) as fresh:
        if fresh.winner is None and fresh.stopped is None:
            choose_winner(fresh)
        return fresh


def choose_winner(record: SweepRecord) -> dict[str, Any] | None:
    """Pick the search's winner from MLflow and record it (or record why the study stops); call it locked."""
    from phiscale.sweeps.status import child_runs

    search = record.stage("search")
    if search is None:
        raise PhiscaleError(f"sweep {record.id} has no search stage to pick a winner from ({record.path})")
    metric, mode = search["select"]["metric"], search["select"]["mode"]
    runs = child_runs(record)
    by_point: dict[int, list[tuple[int, Any, float]]] = {}
    seen = {"finished": 0, "pruned": 0, "other": 0}
    for index in search["indices"]:
        run = runs.get(index)
        if run is None or run.info.status != "FINISHED":
            seen["other"] += 1
        elif PRUNED_TAG in run.data.tags:
            seen["pruned"] += 1
        elif (value := run.data.metrics.get(metric)) is not None and not math.isnan(value):
            seen["finished"] += 1
            by_point.setdefault(record.point(index).point, []).append((index, run, float(value)))
        else:
            seen["other"] += 1
    if not by_point:
        stop(record, f"no search run finished with {metric} ({seen['pruned']} pruned, {seen['other']} failed, "
                     f"cancelled or missing of {len(search['indices'])}); the scale stage is not run: fix the search "
                     f"and `phiscale-sweep resume {record.id}`")
        return None
    sign = -1.0 if mode == "max" else 1.0

    def rank(point: int) -> tuple[float, float, int]:
        entries = by_point[point]
        macs = entries[0][1].data.metrics.get(MACS, math.inf)
        return sign * fmean(v for _, _, v in entries), macs, point

    best = min(by_point, key=rank)
    index, run, _ = max(by_point[best], key=lambda e: -sign * e[2])
    params = run.data.params
    carried = [f"{key}={quote_value(params[key])}" for key in CARRIED if key in params]
    if len(carried) < len(CARRIED):
        carried = [o for o in record.point(index).own if o.split("=", 1)[0] in CARRIED]
    tied = [p for p in by_point if p != best and rank(p)[0] == rank(best)[0]]
    record.winner = {
        "run_id": run.info.run_id, "index": index, "point": best, "overrides": carried, "metric": metric,
        "mode": mode, "value": fmean(v for _, _, v in by_point[best]), "macs": rank(best)[1],
        "values": {str(i): v for entries in by_point.values() for i, _, v in entries},
        "how": (f"{mode} {metric} over {seen['finished']} finished search runs ({seen['pruned']} pruned, "
                f"{seen['other']} failed or missing)" + (f"; tied with points {tied}, fewer MACs won" if tied else "")),
        "at": now_iso(),
    }  # fmt: skip
    record.save()
    if record.parent_run_id:
        from phiscale.tracking.writes import tag_run

        tag_run(record.tracking_uri, record.parent_run_id, {WINNER_TAG: run.info.run_id})
    print(f"phiscale: study {record.id}: search winner run {index} ({' '.join(carried)}), {metric}="
          f"{record.winner['value']:.4f}; {record.winner['how']}", flush=True)
    return record.winner


def stop(record: SweepRecord, why: str) -> None:
    """The study ends after its search: the reason in the record, on the parent (a tag, FAILED), and here."""
    record.stopped = why
    record.save()
    if record.parent_run_id:
        from phiscale.tracking.writes import set_run_status, tag_run

        tag_run(record.tracking_uri, record.parent_run_id, {STOPPED_TAG: why})
        set_run_status(record.tracking_uri, record.parent_run_id, "FAILED")
    print(f"phiscale: study {record.id} stopped: {why}", flush=True)
