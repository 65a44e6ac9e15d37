"""Checkpoints that survive a kill mid-write, and the choice of the one a restart resumes from.

Lightning's own writer (`lightning.fabric.utilities.cloud_io._atomic_save`) goes through fsspec's
transaction: a temporary file in the system temp dir, then a move. On a cluster `/tmp` is
node-local and the output dir is on a shared file system, so the move is a copy onto the target
(`os.rename` fails with EXDEV): not atomic, and `/tmp` must hold the whole checkpoint.
`AtomicCheckpointIO` writes a temporary file beside the target instead, flushes and fsyncs it and
`os.replace`s it onto the target (POSIX rename(2): atomic within one directory), so the previous
checkpoint stays whole until the new one is complete.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from phiscale.errors import PhiscaleError

TEMP_SUFFIX = ".tmp"
UNREADABLE = ".unreadable"


def temp_path(path: Path) -> Path:
    """Where `path` is written before it is complete: beside it (same file system), hidden."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """torch.save to a temporary file beside `path`, flush + fsync, os.replace, fsync the directory.
    A write that fails removes its temporary; on a full disk that is one line (DiskFull, with the
    bytes it needed and the bytes free), `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # a DeepSpeed checkpoint of an earlier stage (resume=weights into DDP): kept aside
        aside = path.with_name(f"{path.name}.deepspeed-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        print(f"phiscale: {path} was a DeepSpeed checkpoint directory; moved to {aside.name} for this file", flush=True)
    temp = temp_path(path)
    try:
        with open(temp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        from phiscale.train.disk_room import checkpoint_disk_full

        if isinstance(err, Exception) and (full := checkpoint_disk_full(err, path, checkpoint)) is not None:
            raise full from None
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself is durable
    finally:
        os.close(directory)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for files, written by `write_checkpoint` (DeepSpeed writes its own dirs)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_checkpoint(checkpoint, path)


# ---------------------------------------------------------------- retention -----
STEP_PATTERN = re.compile(r"^step-(\d+)\.ckpt$")


def step_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step-{step:08d}.ckpt"


def kept_steps(ckpt_dir: Path) -> list[Path]:
    """The kept step checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("step-*.ckpt") if (m := STEP_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def keep_latest(last: Path, step: int, k: int) -> list[Path]:
    """Keep `last` (just written, whole) as `step-<step>.ckpt` too, and only the k latest of those
    (torchtitan's keep_latest_k). A hard link: no second write, and the next last.ckpt is a new file
    (os.replace), so the link keeps this one's bytes. Files only (a DeepSpeed directory is skipped).
    Returns the removed ones."""
    if k <= 0 or not last.is_file():
        return []
    target = step_path(last.parent, step)
    if not target.exists():
        temp = temp_path(target)
        temp.unlink(missing_ok=True)
        try:
            os.link(last, temp)
        except OSError:  # a file system without hard links: a copy
            import shutil

            shutil.copyfile(last, temp)
        os.replace(temp, target)
    removed = kept_steps(last.parent)[:-k]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


# ---------------------------------------------------------------- on start -----
@dataclass(frozen=True)
class ResumeChoice:
    """The checkpoint a start resumes from, and the unreadable ones it passed over."""

    path: Path | None
    step: int
    unreadable: tuple[tuple[Path, str], ...] = ()


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was saved at; OSError/RuntimeError/… when it cannot be read.

    A file is read with mmap (the tensors are not loaded): a truncated file has no zip central
    directory and fails here at once. A DeepSpeed checkpoint directory is whole once the tag its
    `latest` names holds every rank's files (PhiscaleError naming what is missing, else); its step
    is not read here (-1)."""
    if path.is_dir():
        from phiscale.train.deepspeed_checkpoint import checked_tag

        checked_tag(path)
        return -1
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError("not a Lightning checkpoint (no state_dict)")
    return int(checkpoint.get("global_step", 0))


def deepspeed_world_size(path: Path) -> int | None:
    """The data-parallel world size a DeepSpeed checkpoint directory was written with (DeepSpeed's
    `dp_world_size` in `<tag>/mp_rank_00_model_states.pt`); None for a file or when it is not said."""
    if not path.is_dir() or not (path / "latest").is_file():
        return None
    states = path / (path / "latest").read_text().strip() / "mp_rank_00_model_states.pt"
    if not states.is_file():
        return None
    value = torch.load(states, map_location="cpu", weights_only=False, mmap=True).get("dp_world_size")
    return int(value) if value is not None else None


def check_world_size(path: Path, world_size: int) -> None:
    """DeepSpeed cannot load ZeRO optimizer shards written by another number of data-parallel ranks
    (it fails deep inside loading, after the run opened): refuse that here, in one line."""
    written = deepspeed_world_size(path)
    if written is not None and written != world_size:
        raise PhiscaleError(
            f"{path} is a DeepSpeed checkpoint of {written} data-parallel ranks and this run has {world_size}: "
            f"DeepSpeed cannot reshard its ZeRO optimizer state; add resume=weights to continue this run from its "
            f"consolidated weights with a fresh optimizer, or run with {written} ranks (trainer.devices x "
            "trainer.num_nodes)"
        )


WEIGHTS_START = "weights_start.json"  # in the checkpoint dir: where a resume=weights stage began


def weights_start(path: Path, ckpt_dir: Path) -> int | None:
    """resume=weights: the step the run continues from when it starts from `path`'s weights (its
    global step), or None when `path` was written by a stage that already started from weights
    (a restart of it, e.g. a requeued job with the same command: that resumes in full)."""
    import json

    marker = ckpt_dir / WEIGHTS_START
    if marker.is_file() and Path(path).resolve().parent == ckpt_dir.resolve():
        began = int(json.loads(marker.read_text())["step"])
        if checkpoint_step(path) > began or (path.is_dir() and deepspeed_step(path) > began):
            return None
    return deepspeed_step(path) if path.is_dir() else checkpoint_step(path)


def mark_weights_start(ckpt_dir: Path, source: Path, step: int) -> None:
    """Record that this run's stage began at `step` from `source`'s weights (rank 0, at start)."""
    import json

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / WEIGHTS_START).write_text(json.dumps({"from": str(source), "step": int(step)}) + "\n")


def best_so_far(path: Path) -> tuple[float, dict | None]:
    """resume=weights: the run's best val top-1 in checkpoint `path` and its best-checkpoint
    callback's state (so a fresh stage never replaces best.ckpt with a worse one); (0.0, None)
    when it does not say. A DeepSpeed directory keeps them in its client state."""
    if path.is_dir():
        tag = (path / "latest").read_text().strip() if (path / "latest").is_file() else ""
        path = path / tag / "mp_rank_00_model_states.pt"
        if not tag or not path.is_file():
            return 0.0, None
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    best = float(checkpoint.get("phiscale", {}).get("best_val_top1", 0.0))
    states = [v for k, v in checkpoint.get("callbacks", {}).items()
              if str(k).startswith("ModelCheckpoint") and isinstance(v, dict) and v.get("monitor") == "val/top1"]
    return best, (states[0] if states else None)


def deepspeed_step(path: Path) -> int:
    """The optimizer step of a DeepSpeed checkpoint directory (Lightning's `global_step` in its
    client state), 0 when it does not say."""
    if not (path / "latest").is_file():
        return 0
    states = path / (path / "latest").read_text().strip() / "mp_rank_00_model_states.pt"
    if not states.is_file():
        return 0
    value = torch.load(states, map_location="cpu", weights_only=False, mmap=True).get("global_step")
    return int(value) if value is not None else 0


def _reason(path: Path, err: BaseException) -> str:
    if path.is_file() and path.stat().st_size == 0:
        return "empty file"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}"[:160]


def choose_resume(candidates: Iterable[Path]) -> ResumeChoice:
    """The readable checkpoint with the highest step among `candidates` (earlier ones win ties:
    list last.ckpt first); the unreadable ones with why. No candidate on disk: path None."""
    best: tuple[int, Path] | None = None
    unreadable = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            step = checkpoint_step(path)
        except Exception as err:  # noqa: BLE001 (any failure to read means: not resumable)
            unreadable.append((path, _reason(path, err)))
            continue
        if best is None or step > best[0]:
            best = (step, path)
    if best is None:
        return ResumeChoice(None, 0, tuple(unreadable))
    return ResumeChoice(best[1], max(best[0], 0), tuple(unreadable))


def refuse_unresumable(choice: ResumeChoice, output_dir: Path) -> None:
    """Nothing intact to resume from, though checkpoints exist: one line; nothing is changed."""
    if choice.path is None and choice.unreadable:
        names = "; ".join(f"{p.name} ({why})" for p, why in choice.unreadable)
        raise PhiscaleError(
            f"cannot resume {output_dir}: no intact checkpoint ({names}); start a new run with another "
            "paths.output_dir or run_name, or give ckpt_path=<an intact .ckpt>"
        )


def set_aside(unreadable: Iterable[tuple[Path, str]], resumed_from: Path | None) -> list[Path]:
    """Move each unreadable checkpoint to `<name>.unreadable-<time>` (kept for a look, never read
    again), with one line each; returns where they went."""
    moved = []
    for path, why in unreadable:
        target = path.with_name(f"{path.name}{UNREADABLE}-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            continue  # another rank of this run moved it first
        moved.append(target)
        print(f"phiscale: {path} is unreadable ({why}); moved to {target.name}, resuming from {resumed_from}",
              flush=True)
    return moved


STALE_TEMP = re.compile(r"^\..+\.(\d+)" + re.escape(TEMP_SUFFIX) + "$")


def remove_stale_temps(ckpt_dir: Path) -> list[Path]:
    """Temporary files an earlier, killed attempt left behind (their writer's pid is gone)."""
    removed = []
    for path in ckpt_dir.glob(f".*{TEMP_SUFFIX}"):
        match = STALE_TEMP.match(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
