"""A submitted sweep: its id, its record file, and its parent MLflow run.

A sweep file says what to train; a record says what was submitted, fixed for the life of the sweep:

    <root>/sweeps/<id>/sweep.json      the record (`SweepRecord`): name, id, the sweep file and its
                                       sha256, every run's overrides, the extra overrides, the submit
                                       command, each submission (SLURM array job id, indices), the
                                       tracking URI and experiment, the parent MLflow run id
    <root>/sweeps/<id>/points/<i>/     run i's output dir (paths.output_dir): a resubmitted run
                                       resumes from its own last.ckpt into its own MLflow run

The id is `<name>-<yyyymmdd>-<4 hex digits>` (e.g. `phi-20261128-1a2b`). A Hydra multirun over a
sweep file keeps its record in the multirun's sweep dir, linked from `<root>/sweeps/<id>`, so
`phiscale-sweep status` finds both kinds the same way. Every run of the sweep is a child of the
parent run (`mlflow.parentRunId`), so the MLflow UI nests them and `tags.phiscale.sweep_id` filters
them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import secrets
import shlex
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phiscale.errors import PhiscaleError
from phiscale.paths import write_atomically
from phiscale.sweeps.file import SEED_KEY, Sweep

RECORD = "sweep.json"
LOCK = "record.lock"  # beside the record: one reader-modifier-writer of it at a time (`locked`)
SWEEPS_DIR = "sweeps"  # under paths.root
POINTS_DIR = "points"  # under a record's dir; slurm/sweep.sbatch knows this layout too
LAUNCHERS = ("slurm", "local", "multirun")
# Keys the record sets for every run (each run's own output dir, one store and experiment for the
# parent and its children): a point, the base or the extra overrides may not set them.
PINNED_KEYS = ("paths.output_dir", "tracking.uri", "tracking.experiment")
# The parent run's tags (docs/ARCHITECTURE.md, "MLflow schema").
PARENT_TAG, SWEEP_TAG, SWEEP_ID_TAG = "phiscale.sweep_parent", "phiscale.sweep", "phiscale.sweep_id"
FILE_TAG, HASH_TAG, POINTS_TAG = "phiscale.sweep_file", "phiscale.sweep_hash", "phiscale.sweep_points"
COMMAND_TAG, ARRAY_TAG, RECORD_TAG = "phiscale.submit_command", "phiscale.slurm_array_job_id", "phiscale.sweeps.record"
# A child run's tags besides the sweep file's own `sweep`, `sweep_index`, `sweep_point`, `seed`.
PARENT_RUN_TAG, OVERRIDES_TAG = "mlflow.parentRunId", "phiscale.sweep_overrides"
# A two-stage study (sweeps/study.py): each run's stage; the parent's winner of the search, or why it stopped.
STAGE_TAG, WINNER_TAG, STOPPED_TAG = "phiscale.stage", "phiscale.search.winner", "phiscale.study.stopped"


@dataclass
class RecordPoint:
    """One run of the sweep as submitted: index i, its point and seed, what composes it, where it lives."""

    index: int
    point: int  # the point without the seed (`sweep_point`)
    seed: int | None  # from the file's `seeds:`; None: the config's seed
    overrides: list[str]  # the sweep's base, then `own`
    own: list[str]  # the point's own overrides (and seed=)
    output_dir: str
    stage: str | None = None  # a study's "search" or "scale"; None: a one-stage sweep
    tags: dict[str, str] = field(default_factory=dict)  # the point's own (a series point: series, level)


@dataclass
class Submission:
    """One launch of some of the runs: the first submission, or a resume."""

    launcher: str  # one of LAUNCHERS
    indices: list[int]
    command: str
    at: str  # ISO 8601, UTC
    array_job_id: str | None = None  # SLURM only


@dataclass
class SweepRecord:
    """`<dir>/sweep.json`: everything about a submitted sweep that its runs, `status` and `resume` need."""

    id: str
    name: str
    description: str
    sweep_file: str
    sweep_hash: str  # sha256 of the sweep file's bytes at submission
    created: str
    extra: list[str]  # overrides after every run's own (the command line's)
    submit_command: str
    tracking_uri: str
    experiment: str
    tags: dict[str, str]  # the sweep file's `tags:`
    points: list[RecordPoint]
    parent_run_id: str | None = None
    submissions: list[Submission] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # a study's (Stage.describe); [] for one stage
    winner: dict[str, Any] | None = None  # the search's winner: run id, overrides, how and from which values
    stopped: str | None = None  # why a study stopped after its search (no finished point)
    epochs: dict[str, int] | None = None  # {"spent": …, "full": …} once every run ended (sweeps/close.py)
    path: Path = field(default=Path(RECORD), compare=False)  # where it is stored (not in the JSON)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def point(self, index: int | str) -> RecordPoint:
        """Run `index` of the sweep, or an error naming the indices it has."""
        try:
            wanted = int(str(index))
        except ValueError:
            wanted = None
        found = next((p for p in self.points if p.index == wanted), None)
        if found is None:
            raise PhiscaleError(f"sweep {self.id} has no run sweep.index={index!r}; its runs are "
                                f"{format_indices([p.index for p in self.points])} ({self.path})")
        return found

    def pinned(self, index: int) -> dict[str, str]:
        """What the record fixes for run `index`: its output dir, the store and the experiment."""
        values = (self.point(index).output_dir, self.tracking_uri, self.experiment)
        return dict(zip(PINNED_KEYS, values, strict=True))

    def child_tags(self, index: int) -> dict[str, str]:
        """The MLflow tags of run `index`: a child of the parent, findable by sweep id and point."""
        point = self.point(index)
        tags = {**self.tags, **point.tags, "sweep": self.name, "sweep_index": str(point.index),
                "sweep_point": str(point.point),
                SWEEP_ID_TAG: self.id, OVERRIDES_TAG: shlex.join(point.own)}
        if point.seed is not None:
            tags[SEED_KEY] = str(point.seed)
        if point.stage:
            tags[STAGE_TAG] = point.stage
        if self.parent_run_id:
            tags[PARENT_RUN_TAG] = self.parent_run_id
        return tags

    def stage(self, name: str | None) -> dict[str, Any] | None:
        """A study's stage as recorded (Stage.describe), or None."""
        return next((s for s in self.stages if s["name"] == name), None)

    def stage_indices(self, name: str | None) -> list[int]:
        """The runs of stage `name` (every run for a one-stage sweep's None)."""
        return [p.index for p in self.points if p.stage == name]

    def stage_overrides(self, index: int) -> list[str]:
        """What a run learns about its sweep beyond its point: the sweep id, its stage and its early stopping."""
        point = self.point(index)
        out = [f"sweep.id={self.id}"] + ([f"sweep.stage={point.stage}"] if point.stage else [])
        rule = (self.stage(point.stage) or {}).get("early_stop")
        if rule:
            out += [f"sweep.early_stop.metric={quote_value(rule['metric'])}", f"sweep.early_stop.mode={rule['mode']}",
                    "sweep.early_stop.rungs=[" + ",".join(map(str, rule["rungs"])) + "]",
                    f"sweep.early_stop.eta={rule['eta']}"]
        return out

    def parent_tags(self) -> dict[str, str]:
        """The parent run's tags (the SLURM array ids once submitted)."""
        tags = {PARENT_TAG: "true", SWEEP_TAG: self.name, SWEEP_ID_TAG: self.id, FILE_TAG: self.sweep_file,
                HASH_TAG: self.sweep_hash, POINTS_TAG: str(len(self.points)), COMMAND_TAG: self.submit_command,
                RECORD_TAG: str(self.path)}
        if self.array_job_ids:
            tags[ARRAY_TAG] = ",".join(self.array_job_ids)
        if self.winner:
            tags[WINNER_TAG] = self.winner["run_id"]
        return tags

    @property
    def array_job_ids(self) -> list[str]:
        return [s.array_job_id for s in self.submissions if s.array_job_id]

    def latest_submission(self, index: int) -> Submission | None:
        """The last launch that included run `index` (its SLURM task holds the run's current state)."""
        return next((s for s in reversed(self.submissions) if index in s.indices), None)

    def note(self) -> str:
        """The parent run's description in the MLflow UI (`mlflow.note.content`)."""
        return (f"Sweep **{self.name}** ({len(self.points)} runs) from `{self.sweep_file}` "
                f"(sha256 {self.sweep_hash[:12]}), submitted with `{self.submit_command}`. Its runs are the "
                f"nested children; `phiscale-sweep status {self.id}` shows each one's state. Record: `{self.path}`.")

    # -- the file ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    def save(self) -> None:
        """Rewrite the record atomically (a task reading it never sees half a file)."""
        write_atomically(self.path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")


def load_record(path: str | Path) -> SweepRecord:
    """Read `sweep.json` (or the dir holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD
    try:
        data = json.loads(path.read_text())
        data["points"] = [RecordPoint(**p) for p in data["points"]]
        data["submissions"] = [Submission(**s) for s in data.get("submissions", [])]
        return SweepRecord(**data, path=path.resolve())
    except FileNotFoundError:
        raise PhiscaleError(f"no sweep record at {path}: give a sweep id, name or the path of its {RECORD}") from None
    except (ValueError, TypeError, KeyError) as err:
        raise PhiscaleError(f"{path} is not a phiscale sweep record ({err}); move it away or fix it") from None


@contextmanager
def locked(record: SweepRecord) -> Iterator[SweepRecord]:
    """The record as it is on disk now, held against the other writers (a scale task picking the winner,
    the closer, a launch adding its submission) until the block ends; save it inside the block."""
    with open(record.directory / LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield load_record(record.path)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_record(ref: str, root: str | Path) -> SweepRecord:
    """A sweep by id, by name (its latest submission), or by the path of its record or record dir."""
    candidate = Path(ref)
    if candidate.name == RECORD or (candidate.is_dir() and (candidate / RECORD).is_file()):
        return load_record(candidate)
    sweeps = Path(root) / SWEEPS_DIR
    by_id = sweeps / ref / RECORD
    if by_id.is_file():
        return load_record(by_id)
    records = []
    for path in sorted(sweeps.glob(f"*/{RECORD}")):
        try:
            records.append(load_record(path))
        except PhiscaleError:
            continue  # a broken record is reported when asked for by id
    named = [r for r in records if r.name == ref]
    if named:
        return max(named, key=lambda r: (r.created, r.id))
    known = ", ".join(sorted({r.id for r in records})[-8:]) or "none"
    raise PhiscaleError(f"no sweep {ref!r} under {sweeps.resolve()} (recent ids: {known}); give a sweep id or "
                        "name, or --root where the sweep was submitted (paths.root)")


def new_sweep_id(name: str, now: datetime | None = None) -> str:
    """`<name>-<yyyymmdd>-<4 hex>`: readable, sortable by day, unique with the dir check in `create_record`."""
    now = now or datetime.now(timezone.utc)
    return f"{name}-{now:%Y%m%d}-{secrets.token_hex(2)}"


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def create_record(
    sweep: Sweep,
    *,
    root: str | Path,
    extra: Sequence[str],
    submit_command: str,
    tracking_uri: str,
    experiment: str,
    indices: Iterable[int] | None = None,
    directory: str | Path | None = None,
) -> SweepRecord:
    """Write a new record for `sweep` (all its runs, or `indices`) with one output dir per run.

    It lives in `<root>/sweeps/<new id>/`, or in `directory` (a multirun's sweep dir) with a link
    to it from `<root>/sweeps/<id>`. The parent MLflow run is created by `open_parent_run`.
    """
    check_pinned_keys(sweep, extra)
    sweeps = Path(root).resolve() / SWEEPS_DIR
    sweeps.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        sweep_id = new_sweep_id(sweep.name)
        home = sweeps / sweep_id
        try:
            if directory is None:
                home.mkdir()
            else:
                home.symlink_to(Path(directory).resolve(), target_is_directory=True)
            break
        except FileExistsError:
            continue
    else:  # 100 clashes within one day's 65536 ids
        raise PhiscaleError(f"no free sweep id for {sweep.name!r} under {sweeps}; remove old sweeps there")
    place = Path(directory).resolve() if directory is not None else home
    place.mkdir(parents=True, exist_ok=True)
    chosen = list(range(len(sweep))) if indices is None else sorted(set(indices))
    points = []
    for i in chosen:
        output_dir = place / POINTS_DIR / str(i)
        output_dir.mkdir(parents=True, exist_ok=True)  # SLURM opens the task's log file there
        points.append(RecordPoint(i, sweep.point_of(i), sweep.seed_of(i), sweep.overrides(i), sweep.own_overrides(i),
                                  str(output_dir), tags=sweep.own_tags(i)))
    record = SweepRecord(
        id=sweep_id, name=sweep.name, description=sweep.description, sweep_file=str(sweep.path.resolve()),
        sweep_hash=file_sha256(sweep.path), created=now_iso(), extra=list(extra), submit_command=submit_command,
        tracking_uri=tracking_uri, experiment=experiment, tags=dict(sweep.tags), points=points,
        path=place / RECORD,
    )  # fmt: skip
    record.save()
    return record


def open_parent_run(record: SweepRecord) -> str:
    """Create the sweep's parent MLflow run (RUNNING, named by the sweep id) and save its id."""
    from phiscale.tracking.writes import create_parent_run

    _, run_id = create_parent_run(record.tracking_uri, record.experiment, run_name=record.id,
                                  tags=record.parent_tags(), note=record.note())
    record.parent_run_id = run_id
    record.save()
    return run_id


def add_submission(record: SweepRecord, submission: Submission) -> None:
    """Record a launch; the parent run's `phiscale.slurm_array_job_id` lists every array job id."""
    record.submissions.append(submission)
    with locked(record) as fresh:  # keep what a running task wrote meanwhile (a winner, a stop)
        fresh.submissions.append(submission)
        fresh.save()
    record.winner, record.stopped = fresh.winner, fresh.stopped
    if submission.array_job_id and record.parent_run_id:
        from phiscale.tracking.writes import tag_run

        tag_run(record.tracking_uri, record.parent_run_id, {ARRAY_TAG: ",".join(record.array_job_ids)})


def check_pinned_keys(sweep: Sweep, extra: Sequence[str]) -> None:
    """Refuse a point, the base or the extra overrides that set what the record pins per sweep."""
    sources = [("the command line", list(extra)), ("base", sweep.base)]
    sources += [(f"point {i}", point) for i, point in enumerate(sweep.points)]
    for where, overrides in sources:
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key in PINNED_KEYS[1:] and where.startswith("point"):
                raise PhiscaleError(f"{sweep.path}: {where} sets {key}; a sweep's runs share one store and "
                                    "experiment with their parent run: set it in base: or on the command line")
            if key == PINNED_KEYS[0]:
                raise PhiscaleError(f"{where} sets {override}; each run of a sweep has its own output dir "
                                    f"(<root>/{SWEEPS_DIR}/<id>/{POINTS_DIR}/<i>): drop it, or set paths.root")


def format_indices(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (SLURM's --array syntax)."""
    ordered = sorted(set(indices))
    parts, start = [], None
    for i, value in enumerate(ordered):
        if start is None:
            start = value
        if i + 1 == len(ordered) or ordered[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)


def quote_value(value: str) -> str:
    """A Hydra override value, quoted when Hydra's grammar would read it otherwise."""
    if re.fullmatch(r"[\w./:+\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
