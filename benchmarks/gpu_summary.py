"""The GPU session's figures in one JSON file (benchmarks/gpu_session.sh writes the inputs).

For every step: its outcome (ok, failed, timeout, skipped with the reason), wall time and the tail
of its log. For every training run, read back from the MLflow store: images/s, step time and
data-wait fraction (medians over the logging windows), peak memory, MFU, the run's steps and
restarts. Then the ratios: ZeRO-N / DDP, compiled / eager, phiscale / bare PyTorch loop.

MFU = achieved FLOP/s / the card's peak dense bf16 FLOP/s, where achieved FLOP/s = 3 x forward
FLOPs per image x images/s (forward = 2 FLOPs per multiply-add, as phiscale logs model/flops_train;
backward ~ 2 x forward).

    python benchmarks/gpu_summary.py --work WORK --tracking-uri URI --experiment NAME --out FILE
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

# The cards' peak dense bf16 FLOP/s, with their datasheet citations (H100/H200 SXM: 989 TFLOP/s).
from gpu_check import peak_bf16_flops  # benchmarks/ is this script's sys.path[0]

MFU_FORMULA = "3 x model/flops_train (forward FLOPs per image, 2 per multiply-add) x images/s / peak dense bf16 FLOP/s"

# The steps that are phiscale-train runs; each is the MLflow run (and output folder) of that name.
TRAINING_STEPS = ("a_ddp", "b_compile", "c_zero1", "c_zero2", "c_zero3")
# Ratios of images/s: (name, numerator step, denominator step).
RATIOS = (
    ("zero1_over_ddp", "c_zero1", "a_ddp"),
    ("zero2_over_ddp", "c_zero2", "a_ddp"),
    ("zero3_over_ddp", "c_zero3", "a_ddp"),
    ("compile_over_eager", "b_compile", "a_ddp"),
    ("phiscale_over_bare", "a_ddp", "e_bare"),
)
# benchmarks/overhead.py's closing lines.
OVERHEAD_LINES = {
    "bare_steps_per_s": r"bare PyTorch loop:\s+([\d.]+) steps/s",
    "bare_images_per_s": r"bare PyTorch loop:.*\(([\d.]+) images/s\)",
    "loop_steps_per_s": r"phiscale loop:\s+([\d.]+) steps/s",
    "loop_images_per_s": r"phiscale loop:.*\(([\d.]+) images/s\)",
    "loop_over_bare": r"ratio phiscale/bare:\s+([\d.]+)",
}
TAIL_LINES = 30


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(line[:400] for line in text)


def read_steps(path: Path) -> dict[str, dict]:
    """gpu_session.sh's record: one tab-separated line per step (name, status, rc, wall_s, log, note)."""
    steps: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        name, status, rc, wall, log, note = (line.split("\t") + [""] * 6)[:6]
        steps[name] = {"status": status, "rc": int(rc) if rc else None, "wall_s": int(wall) if wall else None,
                       "note": note or None, "log": log or None, "log_tail": log_tail(Path(log)) if log else ""}
    return steps


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def run_figures(client, run, peak: float | None, output_dir: Path) -> dict:
    """A phiscale-train run's throughput figures, from the metrics ThroughputMonitor logged, and
    its end from the summary.json phiscale-train writes in its output folder."""

    def history(key: str) -> list:
        return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))

    images = [m.value for m in history("perf/images_per_s")]
    steps = [m.value for m in history("perf/step_time_s")]
    wait = [m.value for m in history("perf/data_wait_frac")]
    memory = [m.value for m in history("perf/peak_memory_mb")]
    flops = run.data.metrics.get("model/flops_train")
    ips = _median(images)
    resumed = [m.step for m in history("run/restarts") if m.value >= 1]
    end = json.loads((output_dir / "summary.json").read_text()) if (output_dir / "summary.json").is_file() else {}
    return {
        "run_id": run.info.run_id,
        "mlflow_status": run.info.status,
        "windows": len(images),
        "images_per_s": ips,
        "step_time_ms": 1000 * _median(steps) if steps else None,
        "data_wait_frac": _median(wait),
        "peak_memory_gib": max(memory) / 1024 if memory else None,
        "forward_gflops_per_image": flops / 1e9 if flops else None,
        "achieved_tflops": 3 * flops * ips / 1e12 if flops and ips else None,
        "mfu": 3 * flops * ips / peak if flops and ips and peak else None,
        "global_step": end.get("global_step"),
        "run_status": end.get("status"),
        "final_train_loss": run.data.metrics.get("train/loss"),
        "val_top1": run.data.metrics.get("val/top1"),
        "restarts": int(run.data.tags.get("restarts", "0")),
        "resumed_from_step": resumed[0] if resumed else None,
    }


def device_info(peak_tflops: float | None) -> dict:
    import torch

    versions = {}
    for name in ("torch", "lightning", "mlflow-skinny", "mlflow", "hydra-core", "deepspeed", "ffcv", "numba"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    peak = peak_tflops * 1e12 if peak_tflops else peak_bf16_flops(name)
    return {
        "name": name,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "versions": versions,
        "peak_bf16_dense_tflops": peak / 1e12 if peak else None,
        "peak_source": ("--peak-tflops" if peak_tflops else "NVIDIA datasheet, dense = half the 'with sparsity' figure")
        if peak else "no peak known for this device: MFU left out",
    }


def summarize(work: Path, tracking_uri: str, experiment: str, settings: dict, peak_tflops: float | None) -> dict:
    from mlflow.tracking import MlflowClient

    device = device_info(peak_tflops)
    peak = device["peak_bf16_dense_tflops"] * 1e12 if device["peak_bf16_dense_tflops"] else None
    steps = read_steps(work / "steps.tsv")
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    for name in TRAINING_STEPS:
        if name not in steps:
            continue
        runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'") if exp else []
        steps[name]["mlflow_runs"] = len(runs)
        if runs:
            steps[name]["figures"] = run_figures(client, runs[0], peak, work / "runs" / name)
    if "e_bare" in steps and steps["e_bare"]["log"]:
        text = Path(steps["e_bare"]["log"]).read_text(errors="replace") if Path(steps["e_bare"]["log"]).exists() else ""
        found = {k: re.search(p, text) for k, p in OVERHEAD_LINES.items()}
        steps["e_bare"]["figures"] = {k: float(m.group(1)) if m else None for k, m in found.items()}
        bare = steps["e_bare"]["figures"]
        bare["images_per_s"] = bare["bare_images_per_s"]
        # The same model, resolution and batch as a_ddp, so a_ddp's FLOPs per image apply.
        flops = steps.get("a_ddp", {}).get("figures", {}).get("forward_gflops_per_image")
        bare["mfu"] = 3 * flops * 1e9 * bare["images_per_s"] / peak if flops and bare["images_per_s"] and peak else None
    if "d_resume" in steps and "a_ddp" in steps:
        figures = steps["a_ddp"].get("figures", {})
        steps["d_resume"]["figures"] = {
            "mlflow_runs": steps["a_ddp"].get("mlflow_runs", 0),
            "restarts": figures.get("restarts"),
            "resumed_from_step": figures.get("resumed_from_step"),
            "final_step": figures.get("global_step"),
            "same_run": steps["a_ddp"].get("mlflow_runs") == 1 and figures.get("restarts") == 1,
        }

    def ips(step: str) -> float | None:
        return steps.get(step, {}).get("figures", {}).get("images_per_s")

    ratios = {name: (ips(a) / ips(b) if ips(a) and ips(b) else None) for name, a, b in RATIOS}
    return {
        "device": device,
        "settings": settings,
        "mfu_formula": MFU_FORMULA,
        "all_ok": all(s["status"] in ("ok", "skipped") for s in steps.values()),
        "steps": steps,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the session's work folder (steps.tsv, logs)")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--settings", default="{}", help="the session's sizes, as a JSON object")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the card's dense bf16 peak in TFLOP/s, for cards not in the built-in table")
    args = parser.parse_args(argv)
    summary = summarize(args.work, args.tracking_uri, args.experiment, json.loads(args.settings), args.peak_tflops)
    args.out.write_text(json.dumps(summary, indent=2))
    for name, step in summary["steps"].items():
        figures = step.get("figures") or {}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if isinstance(v, float))
        print(f"  {name:<12} {step['status']:<8} {step['wall_s'] or 0:>4} s  {step['note'] or ''} {shown}")
    print("  ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["ratios"].items() if v is not None))
    print(f"gpu_summary: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
