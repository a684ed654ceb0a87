"""Who holds a run: claims, the training lock, stale claims and recorded conflicts.

Two things guard a run dir (docs/locks.md has the picture):

* the **claim**: the open submission recorded in ``prove_run.json`` (who, where, which
  job, since when). It is taken by ``submit`` as a check-and-set under the short-lived
  metadata mutex, and closed when the job records its end, is cancelled or unlocked.
* the **training lock** ``prove_train.lock``: an OS lock (``fcntl.flock`` through
  filelock's ``FileLock``) the payload holds for the whole training. The kernel drops it
  when the process dies, even by SIGKILL, so it is the ground truth for "is someone
  training here now". Its file stays after release: a conflict is a failed non-blocking
  acquire, never the file's existence.

A claim whose job is gone (the scheduler says so, or a local pid on this host is dead)
and whose training lock is free is **stale**. A claim from another host is never judged
stale by pid: only by the scheduler's word on its job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, SoftFileLock, Timeout

from prove_jobs.errors import LockConflict, RunError
from prove_jobs.runs import RunMeta, atomic_write_text, current_host, current_user, now, pid_alive

TRAIN_LOCK = "prove_train.lock"
CONFLICTS_FILE = "prove_conflicts.json"
LOCK_MODES = ("fcntl", "soft")
GROUP_RW = 0o664


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held, when ``stale``) a run."""

    user: str
    host: str
    executor: str
    job_id: str | None
    pid: int | None
    since: float | None
    sweep: str
    stale: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        job = f"{self.executor} job {self.job_id}" if self.job_id else f"{self.executor} submission"
        return f"{self.user}@{self.host}, {job}" + (" (stale)" if self.stale else "")


def claim_is_open(meta: RunMeta) -> bool:
    """The metadata records a submission that has not ended yet."""
    return meta.finished_at is None and meta.failed_at is None and meta.cancelled_at is None


def holder_from_meta(meta: RunMeta, *, job_alive: bool | None) -> LockHolder | None:
    """The holder an open claim names. ``job_alive=None``: the scheduler could not say."""
    if not claim_is_open(meta):
        return None
    stale = job_alive is False
    return LockHolder(
        user=meta.user, host=meta.host, executor=meta.executor, job_id=meta.job_id, pid=meta.pid,
        since=meta.submitted_at, sweep=meta.sweep_file, stale=stale,
    )


def local_job_alive(meta: RunMeta) -> bool | None:
    """A local job's liveness, or ``None`` when it runs on another host (pids mean nothing here)."""
    if meta.host != current_host():
        return None
    return meta.pid is not None and pid_alive(meta.pid)


def train_lock(run_dir: Path, mode: str = "fcntl", timeout_s: float = 0) -> FileLock | SoftFileLock:
    if mode not in LOCK_MODES:
        raise RunError(f"lock mode {mode!r} is unknown (valid: {', '.join(LOCK_MODES)})")
    cls = FileLock if mode == "fcntl" else SoftFileLock
    return cls(run_dir / TRAIN_LOCK, timeout=timeout_s, mode=GROUP_RW)


def training_lock_held(run_dir: Path, mode: str = "fcntl") -> bool | None:
    """Is a live process training in ``run_dir``? ``None`` when the lock cannot be probed."""
    if mode == "soft":
        # A soft lock is a marker file: its existence is all there is to probe.
        return (run_dir / TRAIN_LOCK).exists()
    if not (run_dir / TRAIN_LOCK).exists():
        return False
    lock = train_lock(run_dir, mode)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:
        return None  # e.g. a colleague's lock file we may not open
    lock.release()
    return False


@contextmanager
def training_lock(run_dir: Path, mode: str = "fcntl", wait_s: float = 5) -> Iterator[None]:
    """Hold the run's training lock for the block, or raise ``LockConflict``.

    Waits a few seconds rather than none: ``status`` probes the lock by taking it for an
    instant, and a training that starts at that instant must not give up.
    """
    lock = train_lock(run_dir, mode, wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise LockConflict(f"{run_dir}: another process is training this run ({TRAIN_LOCK} is held)") from None
    except PermissionError:
        raise RunError(
            f"{run_dir / TRAIN_LOCK}: cannot open the training lock (owner: {_owner(run_dir / TRAIN_LOCK)}); "
            "ask them to make it group-writable"
        ) from None
    try:
        yield
    finally:
        lock.release()


def record_conflict(run_dir: Path, holder: LockHolder, sweep: str) -> None:
    """Remember that this user's submit met ``holder``, for ``status`` and ``resubmit --lock-conflicts``."""
    conflicts = read_conflicts(run_dir)
    conflicts[current_user()] = {"holder": holder.to_json(), "at": now(), "sweep": sweep}
    atomic_write_text(run_dir / CONFLICTS_FILE, json.dumps(conflicts, indent=2, sort_keys=True) + "\n")


def clear_conflict(run_dir: Path, user: str | None = None) -> None:
    conflicts = read_conflicts(run_dir)
    if conflicts.pop(user or current_user(), None) is not None:
        atomic_write_text(run_dir / CONFLICTS_FILE, json.dumps(conflicts, indent=2, sort_keys=True) + "\n")


def read_conflicts(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / CONFLICTS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a broken record only loses a hint; the claim itself is elsewhere
    return data if isinstance(data, dict) else {}


def conflict_for(run_dir: Path, user: str | None = None) -> dict[str, Any] | None:
    entry = read_conflicts(run_dir).get(user or current_user())
    return entry if isinstance(entry, dict) else None


def _owner(path: Path) -> str:
    try:
        import pwd

        return pwd.getpwuid(os.stat(path).st_uid).pw_name
    except (KeyError, OSError):
        return "unknown"
