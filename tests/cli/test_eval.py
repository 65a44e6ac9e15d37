"""phiscale-eval: a checkpoint's top-1 equals the run's own validation, logged to MLflow (or not),
and bad checkpoints get one line."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from phiscale.cli.eval import evaluate, main
from phiscale.errors import PhiscaleError
from phiscale.models import build_model
from phiscale.train.datamodule import ImageDataModule
from phiscale.train.module import ImageClassifier
from phiscale.train.plan import make_plan


@pytest.fixture
def validated_checkpoint(fast_cfg, tmp_path):
    """(path, val metrics): the FAST run's module, validated once on digits and saved by Lightning
    with its run config, as phiscale-train leaves it."""
    cfg = fast_cfg("data.loader=torch", "data.num_workers=0")
    plan = make_plan(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    model = build_model(cfg.model.name, plan.num_classes, **plan.model_kwargs)
    module = ImageClassifier(model, optim_cfg=resolved["optim"], global_batch_size=plan.global_batch_size,
                             run_config=resolved)
    data = ImageDataModule(resolved["data"], train_resolution=plan.train_resolution,
                           eval_resolution=plan.eval_resolution)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
    path = tmp_path / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(path)
    return path, metrics


def test_eval_agrees_with_validation_and_logs_a_new_run(validated_checkpoint, tmp_path, capsys):
    path, metrics = validated_checkpoint
    main([str(path), "--num-workers", "0", "--device", "cpu", "--no-log"])
    out = capsys.readouterr().out
    assert f"top-1 {metrics['val/top1']:.4f}  top-5 {metrics['val/top5']:.4f}" in out, out
    assert "(359 images at 32 px)" in out
    assert not (tmp_path / "mlflow.db").exists(), "--no-log must not touch the store"

    main([str(path), "--num-workers", "0", "--device", "cpu"])  # no mlflow_run.json beside it: a new run
    run_id = capsys.readouterr().out.strip().splitlines()[-1].split()[4]
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert run.info.run_name == "eval-mobilenet_v3_small"
    assert run.data.metrics["eval/images"] == 359
    assert run.data.metrics["eval/top1"] == pytest.approx(metrics["val/top1"])
    assert run.data.tags["eval_checkpoint"] == str(path.resolve()) and run.data.tags["eval_weights"] == "model"


def test_ema_weights_that_were_never_kept_are_named(validated_checkpoint, capsys):
    path, _ = validated_checkpoint
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--ema", "--no-log", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "holds no EMA weights; drop --ema" in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.ckpt", "does not exist; pass a .ckpt from <output_dir>/checkpoints/"),
        (lambda p: (torch.save({"state_dict": {}}, p / "x.ckpt"), p / "x.ckpt")[1],
         "has no phiscale run config; was it written by phiscale-train?"),
        (lambda p: (p / "notes.ckpt").write_text("not a checkpoint") and p / "notes.ckpt",
         "notes.ckpt is not a checkpoint (not a torch.save zip archive"),
        (lambda p: "models:/no-such-model@best", "cannot load models:/no-such-model@best ("),
    ],
    ids=["missing", "not-phiscale", "not-a-checkpoint", "unknown-model"],
)
def test_bad_checkpoints_fail_in_one_line(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(make(tmp_path)), "--no-log", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


def test_an_empty_val_set_is_named():
    with pytest.raises(PhiscaleError, match="the val set yielded no images; check --val-path"):
        evaluate(torch.nn.Linear(3, 2), [], torch.device("cpu"))
