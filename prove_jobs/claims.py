"""Who holds a run: its claim, live or stale, and releasing a stale one.

Two things guard a run dir (docs/locks.md has the picture):

* the **claim**: the open submission recorded in ``prove_run.json`` (who, where, which
  job, since when). ``submit`` takes it as a check-and-set under the short-lived
  metadata mutex; it closes when the job records its end, or is cancelled or unlocked.
* the **training lock** ``prove_train.lock`` (:mod:`prove_jobs.locks`): an OS lock the
  payload holds for the whole training, the ground truth for "is someone training here now".

A claim whose job is gone (the scheduler says so, or a local pid on this host is dead)
and whose training lock is free is **stale**. A claim from another host is never judged
stale by pid: only by the scheduler's word on its job. This module never asks the
scheduler itself: callers ask once for all their runs and pass the answer in.
What a user's submit met on a claimed run is recorded apart (:mod:`prove_jobs.conflicts`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from prove_jobs.errors import CorruptMetadata, RunError
from prove_jobs.identity import current_host, current_user, file_owner, same_process
from prove_jobs.locks import training_lock_held
from prove_jobs.metadata import RunMeta, Stage, meta_path, now, read_meta, read_meta_quietly, update_meta
from prove_jobs.runs import META_FILE, TRAIN_LOCK, Run
from prove_jobs.states import slurm_alive

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from prove_jobs.scheduler import Answer

    Jobs = Answer | None  # the scheduler's answer; None: it did not answer

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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LockHolder:
        return cls(
            user=str(data.get("user", "?")), host=str(data.get("host", "?")),
            executor=str(data.get("executor", "?")), job_id=data.get("job_id"), pid=data.get("pid"),
            since=data.get("since"), sweep=str(data.get("sweep", "")), stale=bool(data.get("stale", False)),
        )

    def describe(self) -> str:
        import datetime

        job = f"{self.executor} job {self.job_id}" if self.job_id else f"{self.executor} submission"
        since = f" since {datetime.datetime.fromtimestamp(self.since):%Y-%m-%d %H:%M}" if self.since else ""
        return f"{self.user}@{self.host}, {job}{since}" + (" (stale)" if self.stale else "")


def claim_is_open(meta: RunMeta) -> bool:
    """The metadata records a submission that has not ended yet."""
    return meta.lifecycle.open


def open_slurm_jobs(metas: Iterable[RunMeta | None]) -> list[str]:
    """The SLURM job ids of open claims: what to ask the scheduler about, in one query."""
    return [m.job_id for m in metas if m is not None and m.executor == "slurm" and m.job_id and claim_is_open(m)]


def job_alive(executor: str, job_id: str | None, jobs: Jobs, *, host: str = "", pid: int | None = None,
              pid_start: int | None = None, boot: str | None = None) -> bool | None:
    """Is this job queued or running? ``None``: nobody here can tell.

    ``jobs``: the scheduler's answer (a job it was asked about and does not know is gone), or
    ``None`` when it did not answer. A job it was not asked about (a claim written after the
    question) cannot be judged from it. A local pid counts only while it is the process that
    was recorded (same start time, same boot): pids are reused.
    """
    if executor == "local":
        if host != current_host():
            return None  # a pid means nothing on another host
        return same_process(pid, pid_start, boot)
    if executor == "slurm":
        if not job_id:
            # between writing the claim and sbatch answering: the submitter's pid says
            return same_process(pid, pid_start, boot) if host == current_host() else None
        if jobs is None or job_id not in jobs.asked:
            return None
        info = jobs.get(job_id)
        return info is not None and slurm_alive(info.state, from_accounting=info.from_accounting)
    return None


def claim_alive(meta: RunMeta, jobs: Jobs) -> bool | None:
    """Is the claim's job still queued or running? ``None``: nobody here can tell."""
    if not claim_is_open(meta):
        return False
    return job_alive(meta.executor, meta.job_id, jobs, host=meta.host, pid=meta.pid, pid_start=meta.pid_start,
                     boot=meta.boot_id)


def holder_of(run_dir: Path, meta: RunMeta | None, jobs: Jobs, *, lock_mode: str = "fcntl") -> LockHolder | None:
    """The live or stale holder of ``run_dir``, or ``None`` when nobody claims it.

    Stale only when the claim's job is known gone *and* no process holds the training lock.
    """
    if meta is None or not claim_is_open(meta):
        return None
    alive = claim_alive(meta, jobs)
    stale = alive is False and training_lock_held(run_dir, lock_mode or meta.lock_mode) is False
    return LockHolder(
        user=meta.user, host=meta.host, executor=meta.executor, job_id=meta.job_id, pid=meta.pid,
        since=meta.submitted_at, sweep=meta.sweep_file, stale=stale,
    )


def current_holder(run: Run, max_iters: int, mode: str, jobs: Jobs) -> LockHolder | None:
    """Who holds ``run`` now, live; ``None`` when it is free or its claim is stale (to be taken over).

    Called under the run's metadata mutex, with the scheduler's answer asked for before it.
    """
    refuse_finished(run, max_iters)
    meta = read_claim(run.run_dir, mode)
    holder = holder_of(run.run_dir, meta, jobs, lock_mode=mode)
    if holder is not None and not holder.stale:
        return holder
    held = training_lock_held(run.run_dir, mode)
    lock = run.run_dir / TRAIN_LOCK
    if held is None:
        raise RunError(f"{lock}: cannot open the training lock as {current_user()} (owner: {file_owner(lock)}); "
                       "ask them to make it group-writable (see docs/locks.md)")
    if holder is None and held:
        # Training without an open claim: started by hand, or a claim unlocked with --force.
        return LockHolder(user=file_owner(lock), host="?", executor="unknown", job_id=None, pid=None,
                          since=lock.stat().st_mtime, sweep="")
    return None


def read_claim(run_dir: Path, mode: str) -> RunMeta | None:
    """The run's metadata; a corrupt file is moved aside (kept, never deleted) when nobody trains."""
    try:
        return read_meta(run_dir)
    except CorruptMetadata:
        move_corrupt_claim_aside(run_dir, mode)
        return None


def _how_to_train_again(run_dir: Path) -> str:
    """Moving a run dir aside moves the ``seed<k>/`` runs a later sweep trained inside it too: say so."""
    from prove_jobs.runs import seed_of_dir

    try:
        seeds = sorted(e.name for e in os.scandir(run_dir) if e.is_dir(follow_symlinks=False)
                       and seed_of_dir(e.name) is not None)
    except OSError:
        seeds = []
    if not seeds:
        return "move the run dir aside to train it again"
    return (f"to train it again, move its own files aside, not the folder: it also holds the runs {', '.join(seeds)} "
            "of the sweep's other seeds")


def refuse_finished(run: Run, max_iters: int) -> None:
    """Never train over a finished run."""
    meta = read_meta_quietly(run.run_dir)
    if meta is not None and meta.lifecycle.stage is Stage.FINISHED:
        raise RunError(f"{run.run_dir}: {run.name} already completed; {_how_to_train_again(run.run_dir)}")
    last = run.run_dir / f"iter_{max_iters}.pth"
    if last.exists() and _vouched_for(run.run_dir, last):
        raise RunError(f"{run.run_dir}: holds iter_{max_iters}.pth, a finished run; nothing submitted")


def _vouched_for(run_dir: Path, checkpoint: Path) -> bool:
    """Does ``last_checkpoint`` name ``checkpoint``? mmengine rewrites it only once a save is whole: a final
    checkpoint cut short (a full disk, a kill while saving) is no sign of a finished run."""
    from prove_jobs.resume import read_pointer

    named = read_pointer(run_dir)  # a FIFO or a link there: NotReadable, the run refused in one line
    if named is None:
        return True  # no pointer to go by (an older mmengine): the file's name says it
    return Path(named).name == checkpoint.name


def move_corrupt_claim_aside(run_dir: Path, mode: str = "fcntl") -> Path:
    """Rename a corrupt ``prove_run.json`` to ``prove_run.json.corrupt-<time>`` (kept, never deleted).

    Only when no process holds the training lock: a corrupt claim is stale only then.
    """
    if training_lock_held(run_dir, mode) is not False:
        raise RunError(f"corrupt lock ({meta_path(run_dir)}): a process holds the training lock; left alone")
    aside = meta_path(run_dir).with_name(f"{META_FILE}.corrupt-{int(now())}")
    os.replace(meta_path(run_dir), aside)
    return aside


def unlock(run_dir: Path, jobs: Jobs = None, *, force: bool = False) -> tuple[bool, str]:
    """Release a stale claim on ``run_dir`` (a live one only with ``force``); returns (released, what).

    Only ``prove_run.json`` is touched (its claim marked released, or a corrupt one moved
    aside); logs, checkpoints and configs never are. Never while a process holds the
    training lock, ``force`` or not.
    """
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
    holder = holder_of(run_dir, meta, jobs, lock_mode=meta.lock_mode)
    assert holder is not None
    if not holder.stale:
        if not force:
            return False, f"held by {holder.describe()}: live (--force releases a claim whose job is not training)"
        if training_lock_held(run_dir, meta.lock_mode) is not False:
            raise RunError(f"{run_dir}: a live process holds the training lock ({holder.describe()}); "
                           "cancel the job instead")
    update_meta(run_dir, released_at=now(), released_by=current_user())
    return True, f"released {'stale ' if holder.stale else ''}claim by {holder.describe()}"
