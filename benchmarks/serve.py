"""Serving cost: the image-file model (`NAME-images`) through `mlflow models serve` over HTTP vs the same
model called in-process (`mlflow.pyfunc.load_model(uri).predict`), both measured in this run.

The requests are the digits val split's JPEG files, base64 in `dataframe_split` as a user sends them;
one client, one request at a time, at batch 1 and 64, the two taking turns. Prints images/s (from the
median request) and p50/p99 latency of each, and last the ratio HTTP / in-process images/s per batch size. Without --tracking-uri it first trains the
digits demo (`make demo`'s run, ~30 s on 2 idle cores) with tracking.register=NAME into a temporary dir.

    .venv/bin/python benchmarks/serve.py [--tracking-uri sqlite:///mlflow.db --name digits-net]
                                         [--requests 200] [--batches 1 64]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
ROUNDS = 5  # in-process and HTTP take turns, a fifth of the requests at a time


def train_demo(root: Path, name: str) -> str:
    uri = f"sqlite:///{root}/mlflow.db"
    print(f"training the digits demo with tracking.register={name} into {root} ...", flush=True)
    subprocess.run([str(BIN / "phiscale-train"), "experiment=digits_demo", "trainer.progress_bar=false",
                    f"paths.root={root}/outputs", f"tracking.uri={uri}", f"tracking.register={name}"],
                   check=True, stdout=subprocess.DEVNULL)
    return uri


def val_files() -> tuple[list[bytes], list[str]]:
    from phiscale.data.digits import ensure_digits
    from phiscale.data.imagefolder import scan_image_folder

    index = scan_image_folder(ensure_digits(betons=False).val_dir)
    return [path.read_bytes() for path, _ in index.samples], [index.classes[y] for _, y in index.samples]


def batches_of(files: list[bytes], size: int, count: int) -> list[list[bytes]]:
    return [[files[(i * size + j) % len(files)] for j in range(size)] for i in range(count)]


def timed(call, batches) -> list[float]:
    """Seconds per call, after two warm-up calls (not counted)."""
    for batch in batches[:2]:
        call(batch)
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        call(batch)
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float], batch: int) -> dict[str, float]:
    ordered = sorted(seconds)  # images/s from the median request: a neighbour's burst on shared cores moves the p99
    return {"images_per_s": batch / statistics.median(ordered), "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(uri: str, tracking_uri: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with open(log, "w") as out:
        server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                                   "-h", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                  env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"mlflow models serve exited ({server.returncode}): see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"mlflow models serve did not answer /ping in 300 s: see {log}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="a store holding NAME-images (default: train the demo first)")
    parser.add_argument("--name", default="digits-net", help="the registered name (NAME-images is served)")
    parser.add_argument("--requests", type=int, default=200, help="requests at batch 1 (fewer at larger batches)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args(argv)

    import mlflow
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="phiscale-serve-") as tmp:
        tracking_uri = args.tracking_uri or train_demo(Path(tmp), args.name)
        uri = f"models:/{args.name}-images@best"
        files, labels = val_files()
        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model(uri)
        answers = model.predict(pd.DataFrame({"image": files}))
        accuracy = sum(a["label"] == y for a, y in zip(answers, labels, strict=True)) / len(files)
        print(f"{uri}: {len(files)} digits val files, in-process accuracy {accuracy:.4f}; "
              f"torch threads {__import__('torch').get_num_threads()}, {os.cpu_count()} CPUs", flush=True)

        port = free_port()
        server = serve(uri, tracking_uri, port, Path(tmp) / "serve.log")
        try:
            def over_http(batch: list[bytes]) -> None:
                body = json.dumps({"dataframe_split": {"columns": ["image"],
                                                       "data": [[base64.b64encode(b).decode()] for b in batch]}})
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=300) as answer:
                    json.loads(answer.read())

            def in_process(batch: list[bytes]) -> None:
                model.predict(pd.DataFrame({"image": batch}))

            results = {}
            for size in args.batches:
                count = max(20, args.requests // max(1, size // 8))
                batches = batches_of(files, size, count)
                local, http = [], []
                for r in range(ROUNDS):  # taking turns, so that a change in the machine's load falls on both
                    block = batches[r * count // ROUNDS:(r + 1) * count // ROUNDS]
                    local += timed(in_process, block)
                    http += timed(over_http, block)
                results[size] = (summary(local, size), summary(http, size), count)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)

    print(f"\n{'batch':>5} {'requests':>8} | {'in-process img/s':>16} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'HTTP img/s':>10} {'p50 ms':>7} {'p99 ms':>7}")
    for size, (local, http, count) in results.items():
        print(f"{size:>5} {count:>8} | {local['images_per_s']:>16.0f} {local['p50_ms']:>7.1f} {local['p99_ms']:>7.1f} | "
              f"{http['images_per_s']:>10.0f} {http['p50_ms']:>7.1f} {http['p99_ms']:>7.1f}")
    for size, (local, http, _) in results.items():
        print(f"ratio HTTP / in-process images/s at batch {size}: {http['images_per_s'] / local['images_per_s']:.2f}")


if __name__ == "__main__":
    main()
