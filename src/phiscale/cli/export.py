"""`phiscale-export CHECKPOINT OUT.pt`: one fp32 state dict from any phiscale checkpoint.

DeepSpeed saves a directory of per-rank shards (ZeRO 1/2: optimizer shards hold the fp32
master weights; ZeRO 3: the parameters themselves are partitioned). Evaluation and sharing want
one plain file, so this merges the shards with DeepSpeed's own zero_to_fp32 reader; a normal
Lightning `.ckpt` (or a bare state dict) passes through, cast to fp32.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from phiscale.errors import PhiscaleError, user_errors_as_one_line

# Lightning's DeepSpeed engine wraps the LightningModule; its shards name parameters with this
# prefix (Lightning's own convert_zero_checkpoint_to_fp32_state_dict strips it the same way).
LIGHTNING_WRAPPER_PREFIX = "_forward_module."


def _deepspeed_dir_and_tag(path: Path, tag: str | None) -> tuple[Path, str | None]:
    """Accept the checkpoint dir (holding `latest` and tag folders) or one tag folder itself."""
    if tag is not None:
        if not (path / tag).is_dir():
            raise PhiscaleError(
                f"--tag {tag!r}: no folder {path / tag}; pass one of the tag folders in {path}"
            )
        return path, tag
    if (path / "latest").is_file():
        return path, None
    if any(path.glob("*model_states.pt")):  # a tag folder such as global_step10/ or checkpoint/
        return path.parent, path.name
    tags = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*model_states.pt")))
    if tags:
        raise PhiscaleError(f"{path} has no 'latest' file; choose a checkpoint with --tag (one of {tags})")
    raise PhiscaleError(
        f"{path} is a directory but not a DeepSpeed checkpoint (no 'latest' file, no *model_states.pt); "
        "pass a Lightning last.ckpt directory, a deepspeed save_checkpoint directory, or a .ckpt file"
    )


def consolidate_deepspeed(path: Path, tag: str | None = None) -> dict:
    """Merge a sharded DeepSpeed checkpoint (Lightning's or raw deepspeed's layout) into fp32."""
    ckpt_dir, tag = _deepspeed_dir_and_tag(path, tag)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    return {k.removeprefix(LIGHTNING_WRAPPER_PREFIX): v for k, v in state.items()}


def load_plain(path: Path) -> dict:
    """The state dict of a Lightning `.ckpt`, or a file that already is a state dict."""
    import torch

    # weights_only=False: Lightning checkpoints pickle hyper-parameters; load only your own files.
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return dict(obj["state_dict"])
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise PhiscaleError(f"{path} holds neither a Lightning checkpoint ('state_dict' key) nor a state dict")


def export(
    checkpoint: str | Path, out: str | Path, *, tag: str | None = None, strip_prefix: str = ""
) -> dict:
    """Write one fp32 state dict for `checkpoint` to `out` and return it."""
    import torch

    src, dst = Path(checkpoint).expanduser(), Path(out).expanduser()
    if not src.exists():
        raise PhiscaleError(f"checkpoint {str(src)!r} does not exist; pass a last.ckpt file or directory")
    state = consolidate_deepspeed(src, tag) if src.is_dir() else load_plain(src)
    if strip_prefix:
        if not any(k.startswith(strip_prefix) for k in state):
            raise PhiscaleError(
                f"--strip-prefix {strip_prefix!r} matches no key (keys look like {next(iter(state), '')!r})"
            )
        state = {k.removeprefix(strip_prefix): v for k, v in state.items() if k.startswith(strip_prefix)}
    state = {k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return state


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phiscale-export",
        description="Write one fp32 state dict (torch.save'd {name: tensor}) from a phiscale checkpoint: "
        "a sharded DeepSpeed checkpoint directory (Lightning's last.ckpt/ or a deepspeed "
        "save_checkpoint dir) is consolidated; a normal .ckpt file's state_dict is passed through.",
        epilog="example: phiscale-export outputs/run/checkpoints/last.ckpt model.pt --strip-prefix model.",
    )
    parser.add_argument("checkpoint", help="checkpoint file or DeepSpeed checkpoint directory")
    parser.add_argument("out", help="output file, e.g. model.pt")
    parser.add_argument("--tag", help="DeepSpeed tag folder to read (default: the one named in 'latest')")
    parser.add_argument(
        "--strip-prefix",
        default="",
        help="keep only keys with this prefix and drop it (e.g. 'model.' for the bare network's keys)",
    )
    return parser


@user_errors_as_one_line
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    state = export(args.checkpoint, args.out, tag=args.tag, strip_prefix=args.strip_prefix)
    numel = sum(v.numel() for v in state.values())
    print(f"phiscale-export: wrote {len(state)} tensors ({numel:,} values, fp32) to {args.out}")


if __name__ == "__main__":
    main()
