"""Who holds a run: claims, the training lock, stale claims and recorded conflicts.

Two things guard a run dir (docs/locks.md has the picture):

* the **claim**: the open submission recorded in ``prove_run.json`` (who, where, which
  job, since when). ``submit`` takes it as a check-and-set under the short-lived
  metadata mutex; it closes when the job records its end, or is cancelled or unlocked.
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import BaseFileLock, FileLock, SoftFileLock, Timeout

from prove_jobs.errors import LockConflict, RunError
from prove_jobs.runs import RunMeta, atomic_write_text, current_host, current_user, now, pid_alive

TRAIN_LOCK = "prove_train.lock"
CONFLICTS_FILE = "prove_conflicts.json"
GROUP_RW = 0o664
# SLURM states in which a job may still start or is running: its claim is live.
SLURM_ALIVE = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
     "RESV_DEL_HOLD", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING"}
)


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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LockHolder:
        return cls(
            user=str(data.get("user", "?")), host=str(data.get("host", "?")),
            executor=str(data.get("executor", "?")), job_id=data.get("job_id"), pid=data.get("pid"),
            since=data.get("since"), sweep=str(data.get("sweep", "")), stale=bool(data.get("stale", False)),
        )

    def describe(self) -> str:
        job = f"{self.executor} job {self.job_id}" if self.job_id else f"{self.executor} submission"
        since = ""
        if self.since is not None:
            import datetime

            since = f" since {datetime.datetime.fromtimestamp(self.since):%Y-%m-%d %H:%M}"
        return f"{self.user}@{self.host}, {job}{since}" + (" (stale)" if self.stale else "")


def claim_is_open(meta: RunMeta) -> bool:
    """The metadata records a submission that has not ended yet."""
    return (meta.finished_at is None and meta.failed_at is None and meta.cancelled_at is None
            and meta.released_at is None)


def claim_alive(meta: RunMeta, slurm_states: Mapping[str, str] | None = None) -> bool | None:
    """Is the claim's job still queued or running? ``None``: nobody here can tell.

    ``slurm_states``: the scheduler's answer for this job (absent: unknown to SLURM), or
    ``None`` when the scheduler was not asked or did not answer.
    """
    if not claim_is_open(meta):
        return False
    if meta.executor == "local":
        if meta.host != current_host():
            return None  # a pid means nothing on another host
        return meta.pid is not None and pid_alive(meta.pid)
    if meta.executor == "slurm":
        if not meta.job_id:
            # between writing the claim and sbatch answering: the submitter's pid says
            return meta.pid is not None and pid_alive(meta.pid) if meta.host == current_host() else None
        if slurm_states is None:
            return None
        return slurm_states.get(meta.job_id, "") in SLURM_ALIVE
    return None


def holder_of(run_dir: Path, meta: RunMeta | None, slurm_states: Mapping[str, str] | None = None,
              *, lock_mode: str = "fcntl") -> LockHolder | None:
    """The live or stale holder of ``run_dir``, or ``None`` when nobody claims it.

    Stale only when the claim's job is known gone *and* no process holds the training lock.
    """
    if meta is None or not claim_is_open(meta):
        return None
    alive = claim_alive(meta, slurm_states)
    stale = alive is False and training_lock_held(run_dir, lock_mode or meta.lock_mode) is False
    return LockHolder(
        user=meta.user, host=meta.host, executor=meta.executor, job_id=meta.job_id, pid=meta.pid,
        since=meta.submitted_at, sweep=meta.sweep_file, stale=stale,
    )


def scheduler_states_for(meta: RunMeta | None) -> dict[str, str] | None:
    """One squeue/sacct for a single claim (``submit``, ``unlock``); ``None`` if unreachable."""
    if meta is None or meta.executor != "slurm" or not meta.job_id or not claim_is_open(meta):
        return {}
    from prove_jobs.errors import SchedulerUnavailable
    from prove_jobs.scheduler import slurm_states

    try:
        return slurm_states([meta.job_id])
    except SchedulerUnavailable:
        return None


def train_lock(run_dir: Path, mode: str = "fcntl", timeout_s: float = 0) -> BaseFileLock:
    if mode not in ("fcntl", "soft"):
        raise RunError(f"lock mode {mode!r} is unknown (valid: fcntl, soft)")
    cls = FileLock if mode == "fcntl" else SoftFileLock
    return cls(run_dir / TRAIN_LOCK, timeout=timeout_s, mode=GROUP_RW)


def training_lock_held(run_dir: Path, mode: str = "fcntl") -> bool | None:
    """Is a live process training in ``run_dir``? ``None`` when the lock cannot be probed."""
    path = run_dir / TRAIN_LOCK
    if mode == "soft":
        # SoftFileLock's marker exists exactly while held (filelock removes stale ones on acquire).
        return path.exists()
    if not path.exists():
        return False
    lock = train_lock(run_dir, mode)
    try:
        lock.acquire(timeout=0)
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
            f"{run_dir / TRAIN_LOCK}: cannot open the training lock (owner: {file_owner(run_dir / TRAIN_LOCK)}); "
            "ask them to make it group-writable (sharing.umask in the sweep file)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def record_conflict(run_dir: Path, holder: LockHolder, sweep: str) -> None:
    """Remember that this user's submit met ``holder``, for ``status`` and ``resubmit --lock-conflicts``."""
    conflicts = read_conflicts(run_dir)
    entry: dict[str, Any] = {"holder": holder.to_json(), "at": now(), "sweep": sweep}
    previous = conflicts.get(current_user())
    if isinstance(previous, dict) and previous.get("after_job_id") and previous["after_job_id"] == holder.job_id:
        # still the same holder: our job queued behind it (--after-holder) stays on record
        entry.update(queued_job_id=previous.get("queued_job_id"), after_job_id=previous["after_job_id"])
    conflicts[current_user()] = entry
    _write_conflicts(run_dir, conflicts)


def note_queued_after(run_dir: Path, job_id: str, after_job_id: str) -> None:
    """Our job ``job_id`` waits in the queue for the holder's ``after_job_id`` to end (--after-holder)."""
    conflicts = read_conflicts(run_dir)
    entry = conflicts.get(current_user())
    if not isinstance(entry, dict):
        return
    entry.update(queued_job_id=job_id, after_job_id=after_job_id)
    _write_conflicts(run_dir, conflicts)


def clear_conflict(run_dir: Path, user: str | None = None) -> None:
    conflicts = read_conflicts(run_dir)
    if conflicts.pop(user or current_user(), None) is not None:
        _write_conflicts(run_dir, conflicts)


def _write_conflicts(run_dir: Path, conflicts: dict[str, Any]) -> None:
    atomic_write_text(run_dir / CONFLICTS_FILE, json.dumps(conflicts, indent=2, sort_keys=True) + "\n")


def read_conflicts(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / CONFLICTS_FILE).read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a broken record only loses a hint; the claim itself is in prove_run.json
    return data if isinstance(data, dict) else {}


def conflict_for(run_dir: Path, user: str | None = None) -> dict[str, Any] | None:
    """This user's recorded conflict on ``run_dir``: ``{"holder": {...}, "at": t, "sweep": path}``."""
    entry = read_conflicts(run_dir).get(user or current_user())
    return entry if isinstance(entry, dict) and isinstance(entry.get("holder"), dict) else None


def file_owner(path: Path) -> str:
    try:
        import pwd

        return pwd.getpwuid(os.stat(path).st_uid).pw_name
    except (KeyError, OSError):
        return "unknown"


def move_corrupt_claim_aside(run_dir: Path, mode: str = "fcntl") -> Path:
    """Rename a corrupt ``prove_run.json`` to ``prove_run.json.corrupt-<time>`` (kept, never deleted).

    Only when no process holds the training lock: a corrupt claim is stale only then.
    """
    from prove_jobs.runs import META_FILE, meta_path

    if training_lock_held(run_dir, mode) is not False:
        raise RunError(f"corrupt lock ({meta_path(run_dir)}): a process holds the training lock; left alone")
    aside = meta_path(run_dir).with_name(f"{META_FILE}.corrupt-{int(now())}")
    os.replace(meta_path(run_dir), aside)
    return aside


def unlock(run_dir: Path, *, force: bool = False) -> tuple[bool, str]:
    """Release a stale claim on ``run_dir`` (a live one only with ``force``); returns (released, what).

    Only ``prove_run.json`` is touched (its claim marked released, or a corrupt one moved
    aside); logs, checkpoints and configs never are. Never while a process holds the
    training lock, ``force`` or not.
    """
    from prove_jobs.errors import CorruptMetadata
    from prove_jobs.runs import meta_path, read_meta, update_meta

    if not os.access(run_dir, os.R_OK | os.W_OK | os.X_OK):
        raise RunError(f"{run_dir}: cannot read and write this run dir as {current_user()} "
                       f"(owner: {file_owner(run_dir)})")
    try:
        meta = read_meta(run_dir)
    except CorruptMetadata:
        aside = move_corrupt_claim_aside(run_dir)
        return True, f"corrupt lock ({meta_path(run_dir)}) moved aside to {aside.name}"
    if meta is None or not claim_is_open(meta):
        return False, "no claim"
    holder = holder_of(run_dir, meta, scheduler_states_for(meta), lock_mode=meta.lock_mode)
    assert holder is not None
    if not holder.stale:
        if not force:
            return False, f"held by {holder.describe()}: live (--force releases a claim whose job is not training)"
        if training_lock_held(run_dir, meta.lock_mode) is not False:
            raise RunError(f"{run_dir}: a live process holds the training lock ({holder.describe()}); "
                           "cancel the job instead")
    update_meta(run_dir, released_at=now(), released_by=current_user())
    return True, f"released {'stale ' if holder.stale else ''}claim by {holder.describe()}"
