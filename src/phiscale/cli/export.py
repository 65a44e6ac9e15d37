"""`phiscale-export CHECKPOINT OUT.pt`: one fp32 state dict from any phiscale checkpoint.

DeepSpeed saves a directory of per-rank shards (ZeRO 1/2: optimizer shards hold the fp32
master weights; ZeRO 3: the parameters themselves are partitioned). Evaluation and sharing want
one plain file, so this merges the shards (`phiscale.train.load`, DeepSpeed's zero_to_fp32 reader); a normal
Lightning `.ckpt` (or a bare state dict) passes through, cast to fp32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from phiscale.errors import PhiscaleError, user_errors_as_one_line


def export(
    checkpoint: str | Path, out: str | Path, *, tag: str | None = None, strip_prefix: str = ""
) -> dict:
    """Write one fp32 state dict for `checkpoint` to `out` and return it."""
    import torch

    from phiscale.train.load import state_dict

    dst = Path(out).expanduser()
    state = state_dict(checkpoint, tag)
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
