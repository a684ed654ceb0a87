"""A submission whose first runs fail alike is held: the rest of its array waits for a fix instead of failing too.

No daemon watches: each array task, as it ends (:func:`ended`, called by the payload), adds one line to its
submission's ledger, ``<data_root>/.prove-jobs/submitit/<user>/holds/<array>.json`` (the user's own job
folder: only she writes there), under a lock, so that ends are counted in the order they happened. When
the first :data:`FIRST_RUNS` ends of a submission are all *early* failures (no checkpoint saved by that
start) of one :func:`error_shape`, the task that made it so runs ``scontrol uhold <array>``: SLURM holds
every task still pending (``JobHeldUser`` in squeue); running ones go on. ``uhold`` and not ``hold``: the
user can release it even where prove-jobs runs as an operator (root's ``hold`` is an admin hold,
``JobHeldAdmin``, that only an operator may release). The same file keeps the note ``status`` shows:
which runs failed and with what error (:func:`held_lines`; squeue says which tasks are held, the note why).

Why two: one failure is a run's own (a bad node, a corrupt image in its shard); the first two runs of a
submission failing the same way before any checkpoint is the template's or the environment's, and every
task after them would fail the same way. Why only the first ends: once one run of the submission trained
to its end, a later failure says nothing about the others.

Plain Python, no torch: ``status`` and ``release`` read the notes on the login node.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prove_jobs.errors import ProveJobsError, SchedulerUnavailable
from prove_jobs.fsafe import atomic_write_text
from prove_jobs.jobdir import SUBMITIT_DIR

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from prove_jobs.status import RunStatus

FIRST_RUNS = 2  # the first ends of a submission that decide: this many early failures of one shape hold the rest
HOLDS_DIR = "holds"
HELD_REASON = "JobHeldUser"  # squeue's %r for a task held by its user (scontrol uhold; sbatch --hold)
MAX_LEDGER_BYTES = 1 << 20
LOCK_WAIT_S = 60.0  # the ledger's lock is held for one read and one write
SHAPE_CHARS = 300

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s'\",:;()\[\]{}<>]+)+")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def error_shape(error: str, names: Iterable[str] = ()) -> str:
    """What two runs' errors have in common when one cause made both: the first line, with paths, hex
    addresses and hashes, numbers and the run's own ``names`` (model, variant) written as placeholders.

    ``KeyError: 'decode_head.foo'`` stays itself (the key is the cause); ``... /runs/V/m1/prove/config.py:12``
    and ``... /runs/V/m2/prove/config.py:31`` both become ``... <path>:<n>``.
    """
    line = (error.strip().splitlines() or [""])[0]
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        line = line.replace(name, "<run>")
    line = _PATH.sub("<path>", line)
    line = _HEX.sub("<hex>", line)
    line = _NUMBER.sub("<n>", line)
    return " ".join(line.split())[:SHAPE_CHARS]


@dataclass(frozen=True)
class End:
    """One array task's end, as its ledger line says."""

    task: str  # SLURM_ARRAY_TASK_ID
    run: str  # <VARIANT>/<model>[/seed<k>]
    outcome: str  # "failed" or "completed"
    early: bool  # failed before saving a checkpoint in this start
    shape: str = ""
    error: str = ""  # the recorded error's first line
    at: float = 0.0


def first_alike(ends: Sequence[End], count: int = FIRST_RUNS) -> str | None:
    """The shape that holds the submission when ``ends`` (in order) has just reached ``count`` ends, all early
    failures of that one shape; ``None`` otherwise (also for every end after the ``count``-th: decided once)."""
    if len(ends) != count:
        return None
    shapes = {end.shape for end in ends}
    if all(end.outcome == "failed" and end.early for end in ends) and len(shapes) == 1:
        return shapes.pop()
    return None


@dataclass(frozen=True)
class Note:
    """Why a submission was held: what ``status`` says and ``release`` acts on."""

    array: str
    error: str  # the first failure's error line
    runs: tuple[str, ...]  # the runs whose failures held it
    count: int
    held_at: float
    sweep_file: str = ""

    def line(self, queued: int, sweep: str) -> str:
        """``⏸ 2 queued tasks of job 1234 held: ...``: the one line of ``status``."""
        tasks = f"{queued} queued task{'s' if queued != 1 else ''}"
        return (f"⏸ {tasks} of job {self.array} held: its first {self.count} runs failed alike before any "
                f"checkpoint ({', '.join(self.runs)}): {self.error}; fix the cause, then `prove-jobs release {sweep}` "
                f"(or `scontrol release {self.array}` if the fix changed no template)")


@dataclass(frozen=True)
class Start:
    """One start of an array task's training, as :func:`started` saw it."""

    run_dir: Path
    checkpoint: str | None  # what last_checkpoint said when the start began: a failure that leaves it so is early
    array: str
    task: str
    folder: Path  # the user's job folder (``.../submitit/<user>``)


def started(run_dir: Path) -> Start | None:
    """Called by the payload before it trains; ``None`` outside a SLURM array task (nothing to hold)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID", ""), os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not array or not task:
        return None
    try:
        import submitit

        folder = Path(submitit.JobEnvironment().paths.folder).parent
    except (ImportError, RuntimeError, OSError):
        return None
    return Start(run_dir, _checkpoint_pointer(run_dir), array, task, folder)


def ended(start: Start | None, token: str) -> None:
    """Called by the payload once the training ended (recorded as finished or failed); best effort: a ledger
    that cannot be written costs a hold, never the job's own end. Writes to the job's stderr what it did."""
    if start is None:
        return
    try:
        _ended(start, token)
    except Exception as exc:
        _say(f"the submission's ledger was not updated ({type(exc).__name__}: {exc})")


def _ended(start: Start, token: str) -> None:
    from prove_jobs.locks import file_lock
    from prove_jobs.metadata import read_meta

    meta = read_meta(start.run_dir)
    if meta is None or meta.token != token:
        return  # the claim moved on: this job recorded nothing, and counts for nothing
    if meta.finished_at is not None:
        end = End(start.task, _name(start.run_dir), "completed", False, at=time.time())
    elif meta.failed_at is not None:
        error = (meta.error or "").strip().splitlines()[0] if meta.error else "no error recorded"
        end = End(start.task, _name(start.run_dir), "failed", _checkpoint_pointer(start.run_dir) == start.checkpoint,
                  error_shape(error, (meta.model, meta.variant)), error[:SHAPE_CHARS], time.time())
    else:
        return
    holds = start.folder / HOLDS_DIR
    holds.mkdir(mode=0o750, exist_ok=True)
    with file_lock(holds / f"{start.array}.lock", meta.lock_mode, timeout_s=LOCK_WAIT_S):
        ends = [*read_ledger(start.folder, start.array), end]
        shape = first_alike(ends)
        note = None
        if shape is not None:
            note = Note(start.array, ends[0].error, tuple(e.run for e in ends), len(ends), time.time(),
                        meta.sweep_file)
        write_ledger(holds / f"{start.array}.json", ends, note)
    if note is not None:
        refused = hold_array(start.array)
        _say(f"the first {note.count} runs of job {start.array} failed alike ({note.error}): its queued tasks are "
             + (f"held (scontrol uhold {start.array})" if not refused else f"not held: {'; '.join(refused)}"))


def hold_array(array: str) -> list[str]:
    """``scontrol uhold`` every pending task of ``array``; what SLURM refused (``[]``: all held)."""
    return scontrol("uhold", [array])


def scontrol(verb: str, job_ids: Sequence[str]) -> list[str]:
    """``scontrol uhold|release JOBS`` through :func:`~prove_jobs.scheduler.call`; the lines of what it refused.

    On an array some of whose tasks ended, scontrol exits 1 saying ``N_0: Job has already finished`` and
    ``N_1-3: No error`` (measured on the test cluster, SLURM 22/23): the others were done, not refused.
    """
    from prove_jobs.scheduler import call

    try:
        call(["scontrol", verb, ",".join(job_ids)])
    except SchedulerUnavailable as exc:
        refused = refused_by(exc.stderr)
        return refused if refused or exc.stderr.strip() else [str(exc)]
    return []


def refused_by(stderr: str) -> list[str]:
    """The lines of scontrol's stderr that say a job was not done: not "No error", not "already finished"."""
    fine = ("No error", "Job has already finished")
    return [line.strip() for line in stderr.splitlines() if line.strip() and not line.strip().endswith(fine)]


def read_ledger(folder: Path, array: str) -> list[End]:
    return [End(**{k: v for k, v in e.items() if k in End.__dataclass_fields__})
            for e in _read(folder / HOLDS_DIR / f"{array}.json").get("ends", [])]


def read_note(folder: Path, array: str) -> Note | None:
    """The note of a held submission (``None``: not held by prove-jobs, or unreadable: said nowhere, it only
    explains a hold squeue shows anyway)."""
    held = _read(folder / HOLDS_DIR / f"{array}.json").get("held")
    if not isinstance(held, dict):
        return None
    try:
        return Note(str(held["array"]), str(held["error"]), tuple(str(r) for r in held["runs"]), int(held["count"]),
                    float(held["held_at"]), str(held.get("sweep_file", "")))
    except (KeyError, TypeError, ValueError):
        return None


def job_folder_of(data_root: Path, user: str) -> Path:
    """The user's job folder in a data root, where her submissions' ledgers are."""
    return data_root / SUBMITIT_DIR / user


def held_tasks(statuses: Iterable[RunStatus]) -> dict[str, list[RunStatus]]:
    """The runs whose SLURM task squeue shows held by its user, by array job id."""
    arrays: dict[str, list[RunStatus]] = {}
    for s in statuses:
        job = s.job_id or ""
        if s.pending_reason == HELD_REASON and s.meta is not None and s.meta.executor == "slurm" and "_" in job:
            arrays.setdefault(job.split("_")[0], []).append(s)
    return arrays


def held_lines(statuses: Sequence[RunStatus]) -> list[str]:
    """One line per submission held after its first runs failed alike (squeue: which tasks; the note: why)."""
    lines = []
    for array, group in held_tasks(statuses).items():
        meta = group[0].meta
        assert meta is not None  # held_tasks keeps runs with metadata only
        note = read_note(job_folder_of(group[0].run.data_root, meta.user), array)
        if note is not None:
            lines.append(note.line(len(group), meta.sweep_file or note.sweep_file or "SWEEP"))
    return lines


def _read(path: Path) -> dict[str, Any]:
    from prove_jobs.safe_read import read_capped

    try:
        data = json.loads(read_capped(path, MAX_LEDGER_BYTES))
    except (OSError, ProveJobsError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_ledger(path: Path, ends: Sequence[End], note: Note | None) -> None:
    """A submission's ledger: the ends its tasks added, and the hold once one is placed (kept once written)."""
    previous = _read(path).get("held")
    document = {"ends": [asdict(e) for e in ends], "held": asdict(note) if note is not None else previous}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n", mode=0o640)


def _checkpoint_pointer(run_dir: Path) -> str | None:
    from prove_jobs.safe_read import MAX_POINTER_BYTES, read_capped

    with contextlib.suppress(OSError, ProveJobsError):
        return read_capped(run_dir / "last_checkpoint", MAX_POINTER_BYTES, below=run_dir).decode(errors="replace")
    return None


def _name(run_dir: Path) -> str:
    from prove_jobs.runs import Run

    try:
        return Run.from_dir(run_dir).name
    except ProveJobsError:
        return str(run_dir)


def _say(message: str) -> None:
    sys.stderr.write(f"prove-jobs: {message}\n")
    sys.stderr.flush()
