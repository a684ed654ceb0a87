"""What is known of each run before its state is decided, gathered once for a set of runs.

Every file read, lock probed, process looked at and question asked of the scheduler for a status happens
here (one batched scheduler query for all runs, one sacct query with accounting); what it finds is an
:class:`Evidence` per run, from which :func:`prove_jobs.status.decide` derives the state without touching
anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prove_jobs.claims import LockHolder, holder_of, open_slurm_jobs
from prove_jobs.conflicts import Conflict, checked_conflict
from prove_jobs.errors import ProveJobsError, SchedulerUnavailable, UnreadableValue
from prove_jobs.gpu_hours import Allocated, allocations
from prove_jobs.identity import current_host, current_user, same_process
from prove_jobs.listing import Listing, Listings
from prove_jobs.locks import training_lock_held
from prove_jobs.logs import RunLog
from prove_jobs.metadata import RunMeta, read_meta
from prove_jobs.poll import fresher, not_asked
from prove_jobs.runs import CONFLICTS_FILE, META_FILE, TRAIN_LOCK, Run

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.scheduler import Answer, JobInfo

ReadLog = Callable[[Path, "Sequence[os.DirEntry[str]] | None"], RunLog]
Ask = Callable[[list[str]], "Answer"]


@dataclass(frozen=True)
class Evidence:
    """Everything a run's status is decided from: its files, its claim, the scheduler's word, its holder."""

    run: Run
    listing: Listing
    log: RunLog
    now: float
    here: str  # this host: a local job's pid means something only here
    me: str  # this user: a conflict with one's own other submission is none
    meta: RunMeta | None = None
    meta_note: str | None = None  # why prove_run.json could not be read
    job: JobInfo | None = None  # the scheduler's word on the claim's SLURM job (a run's newer record winning)
    scheduler_note: str | None = None  # the scheduler did not answer, or was not asked about this job yet
    process_alive: bool | None = None  # an open local claim on this host: is its process the one recorded?
    holder: LockHolder | None = None  # the live or stale holder of an open claim
    conflict: Conflict | None = None  # this user's recorded conflict on the run
    conflict_note: str | None = None  # why prove_conflicts.json could not be read
    lock_held: bool | None = None  # no metadata: does a process hold the training lock (None: not probed)
    allocated: tuple[float, int | None] | None = None  # sacct's allocated seconds and GPUs of the claim's job


def gather(runs: Sequence[Run], *, now: float, read_log: ReadLog, accounting: bool = False,
           ask: Ask | None = None, listings: Listings | None = None) -> tuple[list[Evidence], str | None]:
    """The evidence of every run (a run listed twice is gathered once), and a note when the scheduler did not
    answer. ``accounting``: also ask sacct what every SLURM job was allocated. ``ask``: the scheduler's answer
    for job ids (``--watch``: ``PacedScheduler.ask``, the last answer reused). ``listings``: run dirs already
    listed by this command (not listed again: on NFS each listing is a round trip)."""
    listed = listings or {}
    metas = {run: (listing, *_read_meta_or_note(run, listing))
             for run, listing in ((run, Listing(run.run_dir, listed.get(run.run_dir))) for run in runs)}
    answer: Answer | None = None
    note = None
    slurm_jobs = open_slurm_jobs(meta for _, meta, _ in metas.values())
    try:
        if slurm_jobs:  # else no question, and no scheduler module to load
            from prove_jobs.scheduler import ask as ask_now

            answer = (ask or ask_now)(slurm_jobs)
    except SchedulerUnavailable as exc:
        note = f"scheduler unreachable: {exc}"
    jobs = dict(fresher(answer, (meta for _, meta, _ in metas.values()))) if answer is not None else {}
    allocated = allocations((meta, why) for _, meta, why in metas.values()) if accounting else {}
    here, me = current_host(), current_user()
    found = [_one(run, listing, meta, meta_note, read_log(run.run_dir, listing.entries), now=now, here=here, me=me,
                  answer=answer, jobs=jobs, note=note, allocated=allocated)
             for run, (listing, meta, meta_note) in metas.items()]
    return found, note


def _one(run: Run, listing: Listing, meta: RunMeta | None, meta_note: str | None, log: RunLog, *, now: float,
         here: str, me: str, answer: Answer | None, jobs: dict[str, JobInfo], note: str | None,
         allocated: Allocated) -> Evidence:
    run_dir = run.run_dir
    process_alive = holder = job = lock_held = None
    if meta is not None:
        job = jobs.get(meta.job_id or "")
        if meta.lifecycle.open and meta.executor != "slurm" and meta.host == here:
            process_alive = meta.pid is not None and same_process(meta.pid, meta.pid_start, meta.boot_id)
        holder = holder_of(run_dir, meta, answer, lock_mode=meta.lock_mode)
    elif listing.may_have(TRAIN_LOCK):
        lock_held = training_lock_held(run_dir)  # a run started by hand: the lock says whether it trains
    conflict = conflict_note = None
    if listing.may_have(CONFLICTS_FILE):
        try:
            conflict = checked_conflict(run_dir, me)
        except UnreadableValue as exc:
            conflict_note = str(exc)
    return Evidence(run=run, listing=listing, log=log, now=now, here=here, me=me, meta=meta, meta_note=meta_note,
                    job=job, scheduler_note=note or not_asked(answer, meta), process_alive=process_alive,
                    holder=holder, conflict=conflict, conflict_note=conflict_note, lock_held=lock_held,
                    allocated=allocated.get(meta.job_id or "") if meta is not None else None)


def _read_meta_or_note(run: Run, listing: Listing) -> tuple[RunMeta | None, str | None]:
    if not listing.may_have(META_FILE):
        return None, None
    try:
        return read_meta(run.run_dir), None
    except ProveJobsError as exc:
        return None, str(exc)
