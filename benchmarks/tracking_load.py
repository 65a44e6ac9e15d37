"""Tracking load: N training-like writers at once against three MLflow stores, then a full read-back.

Each writer is one training job of a sweep: get-or-create the shared experiment (all writers race
on it), create a run, log 50 params and 10 tags, then `--points` metric points (4 keys) in
log_batch calls at a training-like rate (one call every 0.2-0.5 s, jittered), a heartbeat tag
every 10 calls, a 5 MB artifact, and set_terminated. Writers use a plain MlflowClient with short
HTTP retries and count errors instead of hanging. All start within `--stagger` seconds.

Backends: `sqlite` (sqlite:/// file in WAL mode, no server), `server-sqlite` and
`server-postgres` (`mlflow server` via phiscale.tracking_server, proxied artifacts). One line
per backend and N: runs and metric points read back vs expected, artifacts, finished runs,
errors, p50/p99 latency of a metric log_batch call, and wall time. Goal: server-postgres with
64 writers has 0 errors and 0 lost points; the sqlite lines show where sqlite stops coping.
phiscale-server's servers run MLflow's basic-auth app (`--auth on`, its default): the writers sign
in as a user made for the benchmark (MLFLOW_TRACKING_USERNAME / _PASSWORD), so every request pays
the password check and the permission lookups; `--auth both` measures each server without it too.

    PYTHONPATH=src python benchmarks/tracking_load.py                    # 8,32,64 writers, all backends
    PYTHONPATH=src python benchmarks/tracking_load.py --writers 64 --backends server-postgres
    PYTHONPATH=src python benchmarks/tracking_load.py --quick            # 4 writers, 200 points
    PYTHONPATH=src python benchmarks/tracking_load.py --writers 64 --backends server-postgres --auth both
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("sqlite", "server-sqlite", "server-postgres")
KEYS = ("train/loss", "train/lr", "perf/images_per_s", "val/top1")
PARAMS, TAGS, HEARTBEAT_EVERY = 50, 10, 10
# Fail fast-ish, as a job would: two retries and a 30 s read timeout per HTTP request
# (MLflow's defaults, 7 retries with backoff and 120 s, can hang a writer for minutes).
# Telemetry off: forked writers inherit the parent's telemetry set-up, whose session-id variable
# a writer's thread can unset mid-request (KeyError '_MLFLOW_TELEMETRY_SESSION_ID', seen at 128).
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@dataclass(frozen=True)
class Load:
    points: int = 2000
    steps_per_call: int = 5  # 5 steps x 4 keys = 20 points per log_batch
    interval_s: tuple[float, float] = (0.2, 0.5)
    artifact_mb: float = 5.0
    stagger_s: float = 3.0

    @property
    def calls(self) -> int:
        return -(-self.points // (len(KEYS) * self.steps_per_call))

    @property
    def steps(self) -> int:
        return self.points // len(KEYS)

    def deadline_s(self) -> float:
        """Longest a writer may take before it counts as hung (3x its paced duration + slack)."""
        return self.stagger_s + 3 * self.calls * self.interval_s[1] + 240


# ---------------------------------------------------------------- one writer (a forked process) -----
def get_or_create_experiment(client, name: str, artifact_location: str | None, attempts: int = 5) -> str:
    """The experiment's id; creating it when missing, and losing the creation race is fine."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # another writer created it between our get and create
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def open_client(uri: str):
    """A MlflowClient; for a sqlite file, made under a lock file as phiscale.tracking does: MLflow
    3.17.2 creates a fresh store's tables in SqlAlchemyStore.__init__ without a lock, and writers
    that start together fail with "table ... already exists" (3 of 4 here without the lock)."""
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    import fcntl

    with open(uri.removeprefix("sqlite:///") + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return MlflowClient(uri)


def writer(index: int, uri: str, experiment: str, artifact_location: str | None, artifact: str,
           load: Load, go, out_dir: str) -> None:  # fmt: skip
    from mlflow.entities import Metric, Param, RunTag

    log = os.open(Path(out_dir) / f"writer-{index:03d}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)  # MLflow prints a "View run" link per run: keep the table readable
    os.dup2(log, 2)
    rng = random.Random(index)
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    messages: list[str] = []

    def call(op: str, fn: Callable, *args, **kwargs):
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except Exception as err:
            errors[op] = errors.get(op, 0) + 1
            if len(messages) < 3:
                messages.append(
                    f"{op}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                )
            return None
        latencies.setdefault(op, []).append(time.perf_counter() - started)
        return result

    go.wait()
    time.sleep(rng.uniform(0, load.stagger_s))
    started = time.monotonic()
    client = call("open_store", open_client, uri)
    run_id = None
    experiment_id = client and call(
        "get_or_create_experiment", get_or_create_experiment, client, experiment, artifact_location
    )
    from phiscale.tracking.store import create_run  # rides out a locked server's grant race

    run = experiment_id and call(
        "create_run", create_run, client, experiment_id, run_name=f"writer-{index:03d}",
        tags={"writer": str(index), "slurm_array_task_id": str(index)},
    )  # fmt: skip
    if run:
        run_id = run.info.run_id
        params = [Param(f"cfg.group{i % 5}.key{i}", f"value-{i}-{index}") for i in range(PARAMS)]
        tags = [RunTag(f"tag{i}", f"{index}-{i}") for i in range(TAGS)]
        call("log_params", client.log_batch, run_id, params=params, tags=tags)
        for c in range(load.calls):
            time.sleep(rng.uniform(*load.interval_s))
            now = int(time.time() * 1000)
            steps = range(c * load.steps_per_call, min((c + 1) * load.steps_per_call, load.steps))
            metrics = [Metric(key, rng.random(), now, step) for step in steps for key in KEYS]
            call("log_batch", client.log_batch, run_id, metrics=metrics)
            if c % HEARTBEAT_EVERY == 0:
                call("heartbeat", client.set_tag, run_id, "heartbeat", str(time.time()))
        call("log_artifact", client.log_artifact, run_id, artifact)
        call("set_terminated", client.set_terminated, run_id, "FINISHED")
    result = {"index": index, "run_id": run_id, "latencies": latencies, "errors": errors,
              "messages": messages, "wall_s": time.monotonic() - started}  # fmt: skip
    path = Path(out_dir) / f"writer-{index:03d}.json"
    path.with_suffix(".tmp").write_text(json.dumps(result))
    os.replace(path.with_suffix(".tmp"), path)


# ---------------------------------------------------------------- one measurement -----
@dataclass
class Line:
    backend: str
    writers: int
    runs: int
    params: int
    points: int
    points_expected: int
    artifacts: int
    finished: int
    experiments: int
    default_runs: int
    errors: int
    hung: int
    p50_ms: float
    p99_ms: float
    wall_s: float
    messages: list[str]

    def cells(self) -> list[str]:
        return [
            self.backend, str(self.writers), f"{self.runs}/{self.writers}", f"{self.params}/{self.writers}",
            f"{self.points}/{self.points_expected}", f"{self.artifacts}/{self.writers}",
            f"{self.finished}/{self.writers}", str(self.experiments), str(self.errors + self.hung),
            f"{self.p50_ms:.0f}", f"{self.p99_ms:.0f}", f"{self.wall_s:.0f}",
        ]  # fmt: skip

    @property
    def clean(self) -> bool:
        return (
            self.errors == self.hung == 0 and self.runs == self.params == self.finished == self.artifacts == self.writers
            and self.points == self.points_expected and self.experiments == 1 and self.default_runs == 0
        )  # fmt: skip


HEADER = ["backend", "writers", "runs", "params", "points", "artifacts", "finished", "exps", "errors",
          "p50 ms", "p99 ms", "wall s"]  # fmt: skip


def measure(backend: str, uri: str, n: int, load: Load, work: Path, artifact_location: str | None) -> Line:
    slug = "".join(c if c.isalnum() else "-" for c in backend).strip("-")
    experiment = f"load-{slug}-{n}"
    out_dir = work / f"results-{slug}-{n}"
    out_dir.mkdir()
    artifact = work / "checkpoint.bin"
    if not artifact.exists():
        artifact.write_bytes(os.urandom(int(load.artifact_mb * 1024 * 1024)))
    ctx = mp.get_context("fork")  # the parent imported mlflow once; 64 imports would take a minute
    go = ctx.Event()
    procs = [
        ctx.Process(
            target=writer, args=(i, uri, experiment, artifact_location, str(artifact), load, go, str(out_dir))
        )
        for i in range(n)
    ]
    for proc in procs:
        proc.start()
    started = time.monotonic()
    go.set()
    deadline = started + load.deadline_s()
    for proc in procs:
        proc.join(timeout=max(1.0, deadline - time.monotonic()))
    hung = 0
    for proc in procs:
        if proc.is_alive():
            hung += 1
            proc.kill()
            proc.join()
    wall_s = time.monotonic() - started
    results = [json.loads(p.read_text()) for p in sorted(out_dir.glob("writer-*.json"))]
    hung += n - len(results) - hung  # crashed writers left no result
    batch = sorted(s for r in results for s in r["latencies"].get("log_batch", []))
    return read_back(
        backend, uri, n, load, experiment,
        errors=sum(sum(r["errors"].values()) for r in results), hung=hung,
        p50_ms=1000 * statistics.median(batch) if batch else float("nan"),
        p99_ms=1000 * batch[min(len(batch) - 1, int(0.99 * len(batch)))] if batch else float("nan"),
        wall_s=wall_s, messages=[m for r in results for m in r["messages"]],
    )  # fmt: skip


def read_back(backend: str, uri: str, n: int, load: Load, experiment: str, **measured) -> Line:
    """Count what the store holds: runs, distinct (key, step) points, artifacts, finished runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = client.search_experiments(filter_string=f"name = '{experiment}'")
    runs = client.search_runs([e.experiment_id for e in experiments], max_results=5000) if experiments else []
    points = artifacts = 0
    for run in runs:
        for key in KEYS:
            points += len({m.step for m in client.get_metric_history(run.info.run_id, key)})
        artifacts += any(
            f.file_size == int(load.artifact_mb * 1024 * 1024) for f in client.list_artifacts(run.info.run_id)
        )
    default_runs = len(client.search_runs(["0"], max_results=10))
    return Line(
        backend, n, runs=len(runs), points=points, points_expected=n * load.steps * len(KEYS),
        params=sum(len(r.data.params) == PARAMS for r in runs),
        artifacts=artifacts, finished=sum(r.info.status == "FINISHED" for r in runs),
        experiments=len(experiments), default_runs=default_runs, **measured,
    )  # fmt: skip


# ---------------------------------------------------------------- the backends -----
class Backend:
    """A store to load: `uri(n)` for the n-writer round, `artifact_location` for direct stores.

    Servers in WAL mode (and on PostgreSQL) are phiscale-server's; with `journal="delete"` the
    sqlite server is a plain MlflowServer on a rollback-journal file (MLflow's default set-up)."""

    def __init__(self, name: str, work: Path, workers: int, journal: str, auth: bool = True) -> None:
        self.name, self.workers, self.journal = name, workers, journal
        self.auth = auth and name != "sqlite" and not (name == "server-sqlite" and journal != "wal")
        self.work = work / (name + ("-auth" if self.auth else ""))
        self.work.mkdir()
        self.server = None
        self._signed_in: dict[str, str | None] = {}
        self.label = name if name == "server-postgres" or journal == "wal" else f"{name} ({journal})"
        if name != "sqlite":
            self.label += " auth" if self.auth else " no-auth"

    def __enter__(self) -> Backend:
        from phiscale.server.database import prepare_sqlite_store
        from phiscale.server.process import MlflowServer, free_port
        from phiscale.server.stack import TrackingServer

        if self.name == "sqlite":
            return self
        if self.name == "server-sqlite" and self.journal != "wal":
            store = prepare_sqlite_store(self.work / "mlflow.db", self.journal)
            self.server = MlflowServer(self.work, backend_store_uri=store, workers=self.workers).start()
            url, startup_s = self.server.url, self.server.startup_s
        else:
            self.server = TrackingServer(self.work / "srv")
            result = self.server.start(
                backend=self.name.removeprefix("server-"), port=free_port(), workers=self.workers,
                auth=self.auth,
            )  # fmt: skip
            url, startup_s = result.url, result.startup_s
            if self.auth:  # the writers (forked from here) and the read-back sign in as one user
                password = "load-benchmark-writer"
                self.server.admin().add_user("writer", password)
                env = {"MLFLOW_TRACKING_USERNAME": "writer", "MLFLOW_TRACKING_PASSWORD": password}
                self._signed_in = {key: os.environ.get(key) for key in env}
                os.environ.update(env)
        print(f"  {self.label}: {url} up in {startup_s:.0f} s ({self.workers} workers)", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for key, value in self._signed_in.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.server is not None:
            self.server.stop()

    def uri(self, n: int) -> str:
        if self.server is not None:
            return self.server.url
        from phiscale.server.database import prepare_sqlite_store

        # a fresh file per round: the writers race on creating its tables
        return prepare_sqlite_store(self.work / f"mlflow-{n}.db", self.journal)

    def artifact_location(self, n: int) -> str | None:
        return None if self.server is not None else (self.work / f"artifacts-{n}").as_uri()


def print_table(lines: list[Line]) -> None:
    rows = [HEADER] + [line.cells() for line in lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    for row in rows:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--writers", default="8,32,64", help="writer counts, comma-separated (default 8,32,64)"
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help=f"comma-separated from {', '.join(BACKENDS)}"
    )
    parser.add_argument("--points", type=int, default=2000, help="metric points per writer (default 2000)")
    parser.add_argument(
        "--server-workers", type=int, default=4, help="uvicorn workers per server (default 4)"
    )
    parser.add_argument("--stagger", type=float, default=3.0, help="writers start within this many seconds")
    parser.add_argument(
        "--sqlite-journal",
        choices=("wal", "delete"),
        default="wal",
        help="journal mode of the sqlite stores (default wal, as phiscale-server; delete is sqlite's default)",
    )
    parser.add_argument(
        "--auth", choices=("on", "off", "both"), default="on",
        help="phiscale-server's basic auth on its servers (default on, as phiscale-server; both: each server twice)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="4 writers, 200 points, a 1 MB artifact")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores, logs)")
    args = parser.parse_args()
    counts = [4] if args.quick else [int(n) for n in args.writers.split(",")]
    backends = [b for b in BACKENDS if b in args.backends.split(",")]  # PostgreSQL's lines last
    unknown = set(args.backends.split(",")) - set(BACKENDS)
    if unknown:
        parser.error(f"--backends: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BACKENDS)}")
    load = (
        Load(points=200, artifact_mb=1.0) if args.quick else Load(points=args.points, stagger_s=args.stagger)
    )
    os.environ.update(HTTP_ENV)
    import mlflow.tracking  # noqa: F401  (imported once here; forked writers share it)

    work = Path(tempfile.mkdtemp(prefix="tracking-load-", dir="/tmp"))
    work.chmod(0o711)  # PostgreSQL runs as the postgres OS user and must pass through
    print(f"{os.cpu_count()} CPUs; per writer: {load.points} points in {load.calls} log_batch calls every "
          f"{load.interval_s[0]}-{load.interval_s[1]} s, a {load.artifact_mb:g} MB artifact; work dir {work}")  # fmt: skip
    lines: list[Line] = []
    try:
        auths = {"on": [True], "off": [False], "both": [False, True]}[args.auth]
        rounds = [(b, auth) for b in backends for auth in (auths if b != "sqlite" else [False])]
        for name, auth in rounds:
            with Backend(name, work, args.server_workers, args.sqlite_journal, auth) as backend:
                for n in counts:
                    line = measure(backend.label, backend.uri(n), n, load, work, backend.artifact_location(n))
                    lines.append(line)
                    print(f"  {backend.label} x{n}: {'clean' if line.clean else 'NOT clean'}"
                          + "".join(f"\n    {m}" for m in sorted(set(line.messages))[:4]), flush=True)  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(lines)
    for goal in [line for line in lines if line.backend.startswith("server-postgres") and line.writers == max(counts)]:
        print(f"\ngoal: {goal.backend} with {max(counts)} writers, 0 errors and 0 lost points: "
              f"{'met' if goal.clean else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
