"""A DeepSpeed checkpoint directory: which of its tags is whole, and one line for what is missing.

DeepSpeed's `save_checkpoint(dir, tag)` writes `dir/<tag>/` (the model states, and one optimizer
shard per data-parallel rank; under ZeRO 3 one model states file per rank too) and then `dir/latest`,
a text file naming the tag. A copy cut short or a cleanup that went too far leaves `latest` naming a
tag, or a shard, that is not there; DeepSpeed's readers then fail deep inside (a 20-line
FileNotFoundError). `checked_tag` says what is missing and which tag is whole instead, before
phiscale-eval, phiscale-export or phiscale-train read one.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from phiscale.errors import PhiscaleError

LATEST = "latest"
# The first model states file of a tag: ZeRO 1/2, then ZeRO 3 (deepspeed.utils.zero_to_fp32.get_model_state_file).
MODEL_STATES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
OPTIM_SHARD = "zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"  # per data-parallel rank; bf16_ in front under bf16
ZERO3_MODEL_STATES = "zero_pp_rank_{rank}_mp_rank_00_model_states.pt"


@dataclass(frozen=True)
class Tag:
    """A whole tag of a DeepSpeed checkpoint directory."""

    name: str
    step: int  # Lightning's global_step in the client state, else DeepSpeed's global_steps
    world_size: int  # the data-parallel ranks that wrote it


def is_tag_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in MODEL_STATES)


def whole(shard: Path) -> bool:
    """A torch.save zip whose end is there (a file cut short has no central directory)."""
    return shard.is_file() and zipfile.is_zipfile(shard)


def inspect_tag(tag_dir: Path) -> tuple[Tag | None, str]:
    """(the tag, "") when `tag_dir` holds every file its ranks wrote, else (None, what is missing)."""
    import torch

    if not tag_dir.is_dir():
        return None, f"tag {tag_dir.name!r} is not there"
    states = next((tag_dir / n for n in MODEL_STATES if (tag_dir / n).exists()), tag_dir / MODEL_STATES[0])
    if not whole(states):
        return None, f"tag {tag_dir.name!r} lacks a whole {states.name} (missing or cut short)"
    try:
        meta = torch.load(states, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 (whatever it is, the tag cannot be read)
        return None, f"tag {tag_dir.name!r} has an unreadable {states.name} ({type(err).__name__})"
    ranks = int(meta.get("dp_world_size") or 1)
    bf16 = "bf16_" if any(tag_dir.glob(f"bf16_*{OPTIM_SHARD.format(rank='*')}")) else ""
    wanted = [bf16 + OPTIM_SHARD.format(rank=r) for r in range(ranks)]
    if states.name == MODEL_STATES[1]:  # ZeRO 3: each rank's model states too
        wanted += [ZERO3_MODEL_STATES.format(rank=r) for r in range(1, ranks)]
    missing = [name for name in wanted if not whole(tag_dir / name)]
    if missing:
        return None, (f"tag {tag_dir.name!r} lacks {', '.join(missing)} (written by {ranks} data-parallel ranks; "
                      "missing or cut short)")
    step = meta.get("global_step", meta.get("global_steps", 0))
    return Tag(tag_dir.name, int(step or 0), ranks), ""


def complete_tags(ckpt_dir: Path) -> list[Tag]:
    """The whole tags of `ckpt_dir`, newest (highest step) first."""
    found = [inspect_tag(p)[0] for p in sorted(ckpt_dir.iterdir()) if p.is_dir() and is_tag_folder(p)]
    return sorted((t for t in found if t is not None), key=lambda t: t.step, reverse=True)


def latest_problem(ckpt_dir: Path) -> tuple[str | None, str]:
    """(the tag `latest` names, "") or (None, why it names none)."""
    latest = ckpt_dir / LATEST
    if not latest.exists():
        return None, f"it has no `{LATEST}` file (the save did not finish, or it was not copied)"
    try:
        tag = latest.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        return None, f"its `{LATEST}` file cannot be read ({type(err).__name__})"
    if not tag or "/" in tag or "\n" in tag:
        return None, f"its `{LATEST}` file names no tag ({tag[:40]!r})"
    return tag, ""


def checked_tag(ckpt_dir: Path, tag: str | None = None) -> Tag:
    """The tag to read (`tag`, else the one `latest` names), whole; else one line naming what is
    missing and the newest whole tag, and how to use it."""
    ckpt_dir, named_by_latest, problem = Path(ckpt_dir), tag is None, ""
    if tag is None:
        tag, problem = latest_problem(ckpt_dir)
    if tag is not None:
        found, problem = inspect_tag(ckpt_dir / tag)
        if found is not None:
            return found
        if named_by_latest and not (ckpt_dir / tag).is_dir():
            problem = (f"its `{LATEST}` names tag {tag!r}, which is not there (a copy cut short, or a cleanup that "
                       "went too far)")
    others = [t for t in complete_tags(ckpt_dir) if t.name != tag]
    if others:
        best = others[0]
        advice = (f"the newest complete tag is {best.name!r} (step {best.step}): to use it, write its name into "
                  f"{ckpt_dir / LATEST} (echo {best.name} > {ckpt_dir / LATEST})")
    else:
        broken = [inspect_tag(p)[1] for p in sorted(ckpt_dir.iterdir())
                  if p.is_dir() and p.name != tag and any(p.glob("*_states.pt"))]
        advice = f"no other tag in it is complete{f' ({broken[0]})' if broken else ''}: pass another checkpoint"
    raise PhiscaleError(f"{ckpt_dir} is an incomplete DeepSpeed checkpoint: {problem}; {advice}")
