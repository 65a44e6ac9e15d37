"""`phiscale-profile`: params, MACs, FLOPs and activation memory of the zoo, beside the published figures."""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import sys
from collections.abc import Sequence

from phiscale.errors import user_errors_as_one_line
from phiscale.models.scaling import ALPHA, BASE_RESOLUTION, BETA, GAMMA
from phiscale.models.specs import MODEL_NAMES, PRESET_NAMES

FORMATS = ("table", "markdown", "csv", "json")
HEADERS = ("model", "resolution", "params", "MACs", "FLOPs", "act. mem/img", "published params",
           "published MACs", "params Δ", "MACs Δ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phiscale-profile",
        description=(
            "Print params, MACs (multiply-adds: what the papers call FLOPs), FLOPs (= 2 x MACs) and\n"
            "activation memory per image for every preset, or for the models you name, beside the\n"
            "published params/MACs and the % difference. With no arguments: every preset at its own\n"
            "resolution."
        ),
        epilog=(
            "examples:\n"
            "  phiscale-profile --format markdown\n"
            "  phiscale-profile --model efficientnet --phi 0 1 2 3 4\n"
            "  phiscale-profile --model mobilenet_v1 --width-mult 0.25 0.5 0.75 1.0\n"
            "  phiscale-profile --model mobilenet_v2 --resolution 160 --format csv\n\n"
            "MACs come from torch.utils.flop_counter on a batch-1 forward pass; activation memory is the\n"
            "bytes of every fresh tensor that pass creates (see phiscale.models.profile)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", nargs="+", metavar="NAME",
                        help=f"model(s) to profile (default: every preset; 'efficientnet' if --phi is given). "
                             f"One of: {', '.join(MODEL_NAMES)}")
    parser.add_argument("--phi", nargs="+", type=float, metavar="X",
                        help="compound coefficient(s) for the 'efficientnet' formula family (any real >= 0)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"depth base: d = alpha^phi (default {ALPHA})")
    parser.add_argument("--beta", type=float, default=BETA, help=f"width base: w = beta^phi (default {BETA})")
    parser.add_argument("--gamma", type=float, default=GAMMA,
                        help=f"resolution base: r = gamma^phi (default {GAMMA})")
    parser.add_argument("--width-mult", nargs="+", type=float, metavar="W",
                        help="MobileNet width multiplier(s) (v1: 0.25/0.5/0.75/1.0 or any > 0)")
    parser.add_argument("--depth-mult", type=float, help="MobileNet depth multiplier: repeats = ceil(d * n)")
    parser.add_argument("--resolution-mult", type=float,
                        help=f"MobileNet resolution multiplier: resolution = round({BASE_RESOLUTION} * rho)")
    parser.add_argument("--resolution", type=int,
                        help="input side in pixels (default: each model's native resolution)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--device", choices=("meta", "cpu"), default="meta",
                        help="where the forward pass runs: 'meta' tracks shapes only and gives the same "
                             "numbers in a fraction of the time (default); 'cpu' runs real tensors")
    return parser


def _configs(args: argparse.Namespace) -> list[dict]:
    models = args.model or (["efficientnet"] if args.phi is not None else list(PRESET_NAMES))
    configs = []
    for name, phi, width in itertools.product(models, args.phi or [None], args.width_mult or [None]):
        kwargs = dict(phi=phi, width_mult=width, depth_mult=args.depth_mult, resolution=args.resolution,
                      resolution_mult=args.resolution_mult)
        if name == "efficientnet":
            kwargs.update(alpha=args.alpha, beta=args.beta, gamma=args.gamma)
        configs.append({"name": name, **kwargs})
    return configs


def profile_rows(configs: Sequence[dict], num_classes: int = 1000, device: str = "meta",
                 progress: bool = True) -> list[dict]:
    """One record per configuration: our measurements, the published figures and the differences."""
    import torch  # here, not at the top: `--help` answers without torch
    from tqdm import tqdm

    from phiscale.models import build_model
    from phiscale.models.profile import profile_model, published_for

    rows = []
    for config in tqdm(configs, desc="profiling", unit="model", file=sys.stderr, disable=None if progress else True):
        config = dict(config)
        name = config.pop("name")
        with torch.device(device):
            model = build_model(name, num_classes, **config)
        scale = model.scale
        prof = profile_model(model, scale.resolution)
        pub = published_for(name, width_mult=scale.width_mult, depth_mult=scale.depth_mult,
                            resolution=scale.resolution, phi=scale.phi, num_classes=num_classes)
        rows.append({
            "model": scale.run_name, "name": name, "phi": scale.phi, "width_mult": scale.width_mult,
            "depth_mult": scale.depth_mult, "resolution": scale.resolution, "params": prof.params,
            "macs": prof.macs, "flops": prof.flops, "activation_bytes": prof.activation_bytes,
            "published_params": pub.params if pub else None, "published_macs": pub.macs if pub else None,
            "params_diff_pct": _pct(prof.params, pub.params) if pub else None,
            "macs_diff_pct": _pct(prof.macs, pub.macs) if pub else None,
            "published_source": pub.source if pub else None,
        })
    return rows


def _pct(ours: int, published: int) -> float:
    return round(100.0 * (ours / published - 1.0), 2)


def _ops(n: int) -> str:
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _published_count(n: int | None) -> str:
    if n is None:
        return "-"
    if n % 100_000:  # an exact count
        return f"{n:,}"
    return f"{n / 1e9:g}G" if n >= 1e9 else f"{n / 1e6:g}M"


def _cells(row: dict) -> list[str]:
    def diff(value: float | None) -> str:
        return "-" if value is None else f"{value:+.2f}%"

    return [
        row["model"], str(row["resolution"]), f"{row['params']:,}", _ops(row["macs"]), _ops(row["flops"]),
        f"{row['activation_bytes'] / 2**20:.1f} MiB", _published_count(row["published_params"]),
        _published_count(row["published_macs"]), diff(row["params_diff_pct"]), diff(row["macs_diff_pct"]),
    ]


def render(rows: Sequence[dict], fmt: str) -> str:
    """The rows as `table` (aligned text), `markdown`, `csv` or `json` (raw numbers)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [list(HEADERS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    right = [False] + [True] * (len(HEADERS) - 1)

    def line(values: list[str], sep: str) -> str:
        padded = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return sep.join(padded)

    if fmt == "markdown":
        rule = "|" + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1))
                              for w, r in zip(widths, right, strict=True)) + "|"
        body = ["| " + line(values, " | ") + " |" for values in cells]
        return "\n".join([body[0], rule, *body[1:]])
    return "\n".join([line(cells[0], "  "), "  ".join("-" * w for w in widths)]
                     + [line(values, "  ") for values in cells[1:]])


@user_errors_as_one_line
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = profile_rows(_configs(args), num_classes=args.num_classes, device=args.device)
    print(render(rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
