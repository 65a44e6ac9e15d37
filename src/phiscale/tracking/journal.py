"""The durable journal of one run: everything it sends to MLflow, appended to a file first.

`<output_dir>/tracking/` holds
- `journal.jsonl`: one JSON object per line, in order: `run` (create the run), `params`, `tags`,
  `metrics`, `artifact`, `inputs`, `status`. Appending is all the training step does; the file is
  fsynced at every checkpoint, so whatever a checkpoint covers is on disk before it.
- `run.json`: the run's identity (`RunRecord`): a key of our own, and the MLflow run id once the
  store has the run; the same output dir always means the same run.
- `sent.json`: the sequence number of the last entry the store acknowledged (the sender's cursor).
- `sender.lock`: held by whichever process is sending (the training run, or `phiscale-sync`).
- `rejected.jsonl`: entries MLflow refused outright (kept, never silently dropped).

A torn last line (a process killed mid-write) is cut off when the journal is opened again. An
entry that does not fit on the disk is cut off at once (DiskFull, one line): the entries before it
stay whole, and nothing written later can follow a torn line.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phiscale.errors import DiskFull, PhiscaleError, disk_full_errno
from phiscale.paths import free_bytes, write_atomically

TRACKING_DIR = "tracking"
JOURNAL, CURSOR, RECORD, LOCK, REJECTED = "journal.jsonl", "sent.json", "run.json", "sender.lock", "rejected.jsonl"
CURSOR_EVERY_S = 1.0  # the cursor is rewritten at most this often (a replay after a crash is idempotent)


def now_ms() -> int:
    return int(time.time() * 1000)


def tracking_dir(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / TRACKING_DIR


@dataclass
class RunRecord:
    """What ties an output dir to its MLflow run (`<output_dir>/tracking/run.json`)."""

    run_key: str  # ours, tagged `phiscale.run_key`: finds the run again if a create's reply was lost
    tracking_uri: str
    experiment: str
    run_name: str
    run_id: str | None = None  # None until the store has the run (offline, or the store was down)
    experiment_id: str | None = None
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, tracking_uri: str, experiment: str, run_name: str) -> RunRecord:
        return cls(uuid.uuid4().hex, tracking_uri, experiment, run_name)

    @classmethod
    def load(cls, directory: Path) -> RunRecord | None:
        path = Path(directory) / RECORD
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:
            raise PhiscaleError(f"{path} is not a phiscale run record ({err}); move it away to start a new run") from None

    def save(self, directory: Path) -> None:
        write_atomically(Path(directory) / RECORD, json.dumps(asdict(self), indent=2))


def read_entries(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The complete entries of a journal file and the byte length they take (a torn or unreadable
    tail, from a process killed mid-write, is not counted)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    entries, good = [], 0
    for line in data.split(b"\n")[:-1]:  # the piece after the last newline is incomplete
        try:
            entries.append(json.loads(line))
        except ValueError:
            break
        good += len(line) + 1
    return entries, good


class Journal:
    """Append-only, in order, durable at `sync()`; `pending` holds what the store has not acknowledged."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / JOURNAL
        entries, good = read_entries(self.path)
        if self.path.exists() and self.path.stat().st_size > good:
            os.truncate(self.path, good)  # drop the torn tail before appending after it
        self.sent_seq = self._read_cursor()
        self.next_seq = len(entries)
        self.on_disk = len(entries)  # entries in the file; those after it are kept in memory only (a full disk)
        self._size = good
        self.pending: deque[dict[str, Any]] = deque(e for e in entries if e["seq"] > self.sent_seq)
        self.last_step: dict[str, int] = {}  # metric key -> highest step journaled
        self.params: dict[str, str] = {}
        self.last_entry_ms = entries[-1]["t"] if entries else 0
        for entry in entries:
            self._remember(entry)
        self._lock = threading.Condition()
        # Unbuffered: each entry is one write(2) as it is appended, so a killed process loses nothing
        # it journaled (the OS has it); fsync at checkpoints guards against losing the machine too.
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (open for the journal's life)
        self._cursor_written = time.monotonic()

    # -- writing -----------------------------------------------------------------------
    def append(self, op: str, *, keep_if_full: bool = False, **fields: Any) -> dict[str, Any]:
        """Add one entry (what the training step does; no network, no fsync). On a full disk the
        entry is cut off again and DiskFull raised; with `keep_if_full` (a run's last entries: its
        status must reach MLflow) it is kept in memory and sent, though not on disk."""
        with self._lock:
            entry = {"seq": self.next_seq, "t": now_ms(), "op": op, **fields}
            if self.on_disk == self.next_seq:  # after one kept in memory, none goes to the file (no gap)
                try:
                    self._write((json.dumps(entry, separators=(",", ":")) + "\n").encode())
                    self.on_disk += 1
                except DiskFull:
                    if not keep_if_full:
                        raise
            elif not keep_if_full:
                raise PhiscaleError(f"{self.path} took no entry since the disk was full; only a run's last "
                                    "entries are kept in memory (a bug: report it)")
            self.next_seq += 1
            self.pending.append(entry)
            self.last_entry_ms = entry["t"]
            self._remember(entry)
            self._lock.notify_all()
        return entry

    def _write(self, line: bytes) -> None:
        """The whole line, or nothing: a short write (a disk filling up) is cut off again."""
        done = 0
        try:
            while done < len(line):
                done += os.write(self._file.fileno(), line[done:])
        except OSError as err:
            os.ftruncate(self._file.fileno(), self._size)
            if (code := disk_full_errno(err)) is None:
                raise
            raise DiskFull("appending to the run's journal", self.dir, len(line), free_bytes(self.dir), code=code,
                           notes=(f"its {self.on_disk} entries so far are kept whole",)) from None
        self._size += len(line)

    def _remember(self, entry: dict[str, Any]) -> None:
        if entry["op"] == "metrics":
            for key, _, _, step in entry["values"]:
                if step > self.last_step.get(key, -1):
                    self.last_step[key] = step
        elif entry["op"] == "params":
            self.params.update(entry["params"])

    def sync(self) -> None:
        """Everything appended so far is on disk (fsync): called at every checkpoint."""
        with self._lock:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                os.fsync(self._file.fileno())
                self._file.close()
            self._write_cursor()

    # -- the sender's side ------------------------------------------------------------------
    def wait_for_entries(self, timeout_s: float) -> bool:
        with self._lock:
            if not self.pending:
                self._lock.wait(timeout_s)
            return bool(self.pending)

    def head(self, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` of the oldest entries the store has not acknowledged (not removed)."""
        with self._lock:
            return [self.pending[i] for i in range(min(limit, len(self.pending)))]

    def ack(self, seq: int) -> None:
        """The store holds every entry up to `seq`."""
        with self._lock:
            while self.pending and self.pending[0]["seq"] <= seq:
                self.pending.popleft()
            self.sent_seq = max(self.sent_seq, seq)
            if time.monotonic() - self._cursor_written >= CURSOR_EVERY_S or not self.pending:
                self._write_cursor()

    @property
    def backlog(self) -> int:
        return len(self.pending)

    def _read_cursor(self) -> int:
        path = self.dir / CURSOR
        try:
            return int(json.loads(path.read_text())["seq"])
        except FileNotFoundError:
            return -1
        except (ValueError, KeyError, TypeError):
            return -1  # a damaged cursor only means replaying entries, which the store deduplicates

    def _write_cursor(self) -> None:
        """Never past the file's last entry (one kept in memory is not replayed: the file lacks it).
        A cursor that cannot be written (a full disk) only means replaying entries later."""
        try:
            write_atomically(self.dir / CURSOR, json.dumps({"seq": min(self.sent_seq, self.on_disk - 1)}))
        except (DiskFull, OSError):  # or the file system gone read-only
            pass
        self._cursor_written = time.monotonic()

    def reject(self, entry: dict[str, Any], reason: str) -> None:
        """Keep an entry MLflow refused outright, with the reason, beside the journal."""
        with open(self.dir / REJECTED, "a", encoding="utf-8") as f:
            f.write(json.dumps({"reason": reason, "entry": entry}) + "\n")
