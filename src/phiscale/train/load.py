"""One load path for every kind of checkpoint: phiscale-eval, phiscale-export and a run's model logging.

    a .ckpt file              Lightning's (best.ckpt, last.ckpt): the network (or its EMA) + run config
    a DeepSpeed directory     consolidated to fp32 with DeepSpeed's zero_to_fp32; the run config from
                              the output dir's config.yaml
    runs:/<run id>/<name>, models:/NAME/VERSION, models:/NAME@ALIAS, models:/<model id>
                              an MLflow model as MLflow loads it (uint8 images in, logits out)

Anything else (a file that is not a checkpoint, a missing path, an unknown URI) is one line.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiscale.errors import PhiscaleError

MLFLOW_SCHEMES = ("runs:/", "models:/")
# Lightning's DeepSpeed engine wraps the LightningModule; its shards name parameters with this
# prefix (Lightning's own convert_zero_checkpoint_to_fp32_state_dict strips it the same way).
LIGHTNING_WRAPPER_PREFIX = "_forward_module."


@dataclass
class LoadedModel:
    """A network from `source`. `takes_uint8`: it takes uint8 images and normalises itself (an MLflow
    model); else it takes the loader's normalised images."""

    source: str
    network: Any
    takes_uint8: bool
    step: int = 0
    config: dict[str, Any] | None = None  # the run's resolved config (checkpoints), else None
    params: dict[str, str] = field(default_factory=dict)  # the LoggedModel's params (MLflow models)
    run_id: str | None = None  # the MLflow run it came from, when known
    output_dir: Path | None = None  # the run's output dir (checkpoints)
    val_metrics: dict[str, float] = field(default_factory=dict)  # the validation a checkpoint was saved after
    best_val_top1: float = float("nan")

    @property
    def data(self) -> dict[str, Any]:
        """The data config the network was trained with (for its val set, mean and std)."""
        import json

        if self.config is not None:
            return dict(self.config["data"])
        if "data" in self.params:
            return json.loads(self.params["data"])
        raise PhiscaleError(f"{self.source} does not say which data it was trained on; pass --val-path")

    @property
    def eval_resolution(self) -> int | None:
        if self.config is not None:
            from phiscale.train.plan import dataset_resolution

            res = self.config.get("eval_resolution") or self.config.get("train_resolution")
            scale = getattr(self.network, "scale", None)
            if not res and scale is not None:  # the run's default: the model's own, carried to the data
                res = dataset_resolution(scale.resolution, int(self.config["data"]["base_resolution"]))
            return int(res) if res else None
        return int(self.params["eval_resolution"]) if "eval_resolution" in self.params else None


def is_mlflow_uri(source: str) -> bool:
    return str(source).startswith(MLFLOW_SCHEMES)


def load_model(source: str | Path, *, ema: bool = False, tracking_uri: str | None = None) -> LoadedModel:
    """The network `source` names, ready for eval (see the module docstring)."""
    text = str(source)
    if is_mlflow_uri(text):
        return _load_mlflow(text, tracking_uri)
    path = Path(text).expanduser()
    if not path.exists():
        raise PhiscaleError(f"checkpoint {text} does not exist; pass a .ckpt, a DeepSpeed checkpoint directory, "
                            "runs:/<run id>/model or models:/NAME@best")
    if path.is_dir():
        state = consolidate_deepspeed(path)
        config = _output_dir_config(path)
        return _from_state(text, state, config, step=0, ema=ema, output_dir=path.parent.parent)
    checkpoint = read_checkpoint(path)
    config = checkpoint.get("hyper_parameters", {}).get("run_config")
    if not config:
        raise PhiscaleError(f"{path} has no phiscale run config; was it written by phiscale-train?")
    loaded = _from_state(text, dict(checkpoint["state_dict"]), config, step=int(checkpoint.get("global_step", 0)),
                         ema=ema, output_dir=path.resolve().parent.parent)
    extra = checkpoint.get("phiscale", {})
    loaded.val_metrics = dict(extra.get("val_metrics", {}))
    loaded.best_val_top1 = float(extra.get("best_val_top1", float("nan")))
    return loaded


def read_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint file's contents; one line for a file that is not one."""
    import pickle

    import torch

    if not zipfile.is_zipfile(path):
        raise PhiscaleError(f"{path} is not a checkpoint (not a torch.save zip archive: truncated, or another kind of "
                            "file); pass a .ckpt written by phiscale-train")
    try:
        # weights_only=False: Lightning checkpoints pickle hyper-parameters; load only your own files.
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, ModuleNotFoundError) as err:
        raise PhiscaleError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:120] if str(err) else ''}); pass a .ckpt written by "
                            "phiscale-train") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return dict(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": dict(obj)}  # a bare state dict (phiscale-export's output)
    raise PhiscaleError(f"{path} holds neither a Lightning checkpoint ('state_dict' key) nor a state dict")


def state_dict(source: str | Path, tag: str | None = None) -> dict:
    """Every tensor of a checkpoint (a .ckpt's state_dict, or a DeepSpeed directory consolidated)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise PhiscaleError(f"checkpoint {str(path)!r} does not exist; pass a last.ckpt file or directory")
    return consolidate_deepspeed(path, tag) if path.is_dir() else read_checkpoint(path)["state_dict"]


def start_weights(source: str | Path) -> tuple[dict, dict | None]:
    """resume=weights: the network's weights of a .ckpt or a DeepSpeed checkpoint directory
    (consolidated), and its EMA's when it holds one (else None)."""
    state = state_dict(source)
    model = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    ema = {k.removeprefix("ema.module."): v for k, v in state.items() if k.startswith("ema.module.")}
    if not model:
        raise PhiscaleError(f"{source} holds no network weights (no model.* tensors); is it a phiscale checkpoint?")
    return model, ema or None


def _deepspeed_dir_and_tag(path: Path, tag: str | None) -> tuple[Path, str | None]:
    """Accept the checkpoint dir (holding `latest` and tag folders) or one tag folder itself."""
    if tag is not None:
        if not (path / tag).is_dir():
            raise PhiscaleError(f"--tag {tag!r}: no folder {path / tag}; pass one of the tag folders in {path}")
        return path, tag
    if (path / "latest").exists():
        return path, None
    if any(path.glob("*model_states.pt")):  # a tag folder such as global_step10/ or checkpoint/
        return path.parent, path.name
    if any(p.is_dir() and any(p.glob("*model_states.pt")) for p in path.iterdir()):
        return path, None  # tags without `latest`: checked_tag names the newest whole one
    raise PhiscaleError(
        f"{path} is a directory but not a DeepSpeed checkpoint (no 'latest' file, no *model_states.pt); "
        "pass a Lightning last.ckpt directory, a deepspeed save_checkpoint directory, or a .ckpt file"
    )


def consolidate_deepspeed(path: Path, tag: str | None = None) -> dict:
    """Merge a sharded DeepSpeed checkpoint (Lightning's or raw deepspeed's layout) into fp32; a
    tag with a file missing is one line (`deepspeed_checkpoint.checked_tag`), before DeepSpeed reads it."""
    from phiscale.train.deepspeed_checkpoint import checked_tag

    ckpt_dir, tag = _deepspeed_dir_and_tag(path, tag)
    tag = checked_tag(ckpt_dir, tag).name
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    return {k.removeprefix(LIGHTNING_WRAPPER_PREFIX): v for k, v in state.items()}


def _output_dir_config(ckpt: Path) -> dict:
    from omegaconf import OmegaConf

    config = ckpt.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise PhiscaleError(f"{ckpt} has no {config} beside it (the run's config); pass a .ckpt instead")
    return OmegaConf.to_container(OmegaConf.load(config), resolve=True)


def _from_state(source: str, state: Mapping, config: dict, *, step: int, ema: bool, output_dir: Path) -> LoadedModel:
    from phiscale.models import build_model
    from phiscale.train.plan import model_kwargs

    model = build_model(config["model"]["name"], num_classes=int(config["data"]["num_classes"]),
                        **model_kwargs(config["model"]))
    prefix = "ema.module." if ema else "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise PhiscaleError(f"{source} holds no {'EMA ' if ema else ''}weights; {'drop --ema' if ema else 'is it a phiscale checkpoint?'}")
    model.load_state_dict(weights)
    return LoadedModel(source, model.eval(), takes_uint8=False, step=step, config=config, output_dir=output_dir)


def _load_mlflow(uri: str, tracking_uri: str | None) -> LoadedModel:
    from phiscale.tracking.models import load_logged_model, model_info

    try:
        info = model_info(uri, tracking_uri)
        network = load_logged_model(uri, tracking_uri)
    except Exception as err:  # noqa: BLE001 (MLflow's errors for a wrong name, alias or id are many)
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise PhiscaleError(f"cannot load {uri} ({first}); check the name, version or alias in "
                            "the MLflow UI's Model Registry, and MLFLOW_TRACKING_URI / --tracking-uri") from None
    params = info["params"]
    return LoadedModel(uri, network, takes_uint8=True, step=int(params.get("checkpoint_step", 0)), params=params,
                       run_id=info["run_id"])
