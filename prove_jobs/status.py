"""Where each run stands: :class:`RunStatus`, decided in one pure function (:func:`decide`) from the evidence
:mod:`prove_jobs.evidence` gathers (the run's metadata, its logs, the scheduler's word, its holder, conflicts).

Nothing here is stored: every call derives the state afresh (one batched scheduler query
for all runs), so the answer cannot drift from what is on disk and in the queue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from prove_jobs.claims import LockHolder
from prove_jobs.efficiency import Live, with_usage
from prove_jobs.evidence import Evidence, ReadLog, gather
from prove_jobs.gpu_hours import allocated_hours
from prove_jobs.logs import RunLog, ValPoint, read_run_log
from prove_jobs.logs.runlog import TrainPoint
from prove_jobs.lost_start import scheduler_notes
from prove_jobs.metadata import RunMeta, Stage
from prove_jobs.runs import Run
from prove_jobs.states import RunState, slurm_state
from prove_jobs.values import finite_document

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from prove_jobs.listing import Listings
    from prove_jobs.scheduler import Answer, JobInfo

# A run started by hand (no prove-jobs claim) is running only on evidence: its training lock is
# held, or its logs were written within this long, or within ten of its own log intervals when
# those are longer (a validation or a checkpoint of a big model writes nothing for minutes).
QUIET_AFTER_S = 10 * 60
QUIET_LOG_INTERVALS = 10


def _rounded(value: float | None, digits: int) -> float | None:
    # NaN or infinity (a diverged loss) stays as it is: finite_json writes null and says why beside it
    return value if value is None or not math.isfinite(value) else round(value, digits)


@dataclass(frozen=True)
class RunStatus:
    """Where one run stands: its state, progress, curve and who holds it."""

    run: Run
    state: RunState
    iter: int | None
    max_iters: int | None
    curve: tuple[ValPoint, ...]
    meta: RunMeta | None
    scheduler_state: str | None = None
    node: str = ""
    elapsed_s: float | None = None
    eta_s: float | None = None
    lock_holder: LockHolder | None = None
    pending_reason: str = ""  # squeue's word on why a pending job waits: Priority, Resources, Dependency...
    queue_wait_s: float | None = None  # SLURM's start minus its submit (one clock: the controller's)
    accounted_gpu_hours: float | None = None  # sacct's allocated time x GPUs, where accounting answered
    notes: tuple[str, ...] = field(default_factory=tuple)
    log: RunLog | None = None  # what the logs said (speed, loss, memory: the live view)
    usage: Live | None = None  # a training run's utilisation at its last efficiency sample (prove_jobs.efficiency)

    @property
    def last_val(self) -> ValPoint | None:
        return self.curve[-1] if self.curve else None

    @cached_property  # a report asks for it per cell and per JSON row: once per status
    def best_val(self) -> ValPoint | None:
        scored = [p for p in self.curve if p.miou is not None]
        return max(scored, key=lambda p: (p.miou, p.iter)) if scored else None

    @property
    def gpu_hours(self) -> float | None:
        """sacct's allocated time times GPUs where accounting answered; else the wall time (Elapsed: docs/status.md,
        "Time") times the GPUs the job asked for; ``None`` when neither is known."""
        if self.accounted_gpu_hours is not None:
            return self.accounted_gpu_hours
        gpus = self.meta.gpus if self.meta else None
        if gpus is None or self.elapsed_s is None:
            return None
        return self.elapsed_s * gpus / 3600

    @property
    def restarts(self) -> int:
        return self.meta.restarts if self.meta else 0

    @property
    def job_id(self) -> str | None:
        return self.meta.job_id if self.meta else None

    @property
    def user(self) -> str | None:
        return self.meta.user if self.meta else None

    @property
    def train(self) -> TrainPoint | None:
        """The last train record: speed, loss, LR, memory."""
        return self.log.last_train if self.log else None

    def progress_json(self) -> dict[str, Any]:
        """How the training goes, from its last train record (``null`` before the first)."""
        train = self.train
        return {
            "sec_per_iter": _rounded(self.log.seconds_per_iter if self.log else None, 4),
            "data_time": _rounded(train.data_time if train else None, 4),
            "memory_mb": train.memory_mb if train else None,
            "loss": _rounded(train.loss if train else None, 6),
            "lr": train.lr if train else None,
            "log_path": self.log.log_path if self.log else None,
        }

    @property
    def seed(self) -> int | None:
        """The seed the run trained with: its ``seed<k>/`` folder's, else what its metadata recorded."""
        if self.run.seed is not None:
            return self.run.seed
        return self.meta.seed if self.meta is not None else None

    def to_json(self, *, finite: bool = True) -> dict[str, Any]:
        """What ``status --json`` writes of the run: never NaN nor infinity (null, and ``<key>_note`` says why);
        ``finite=False``: as read, for a writer that makes it finite as it writes it (checked once, not twice)."""
        last, best = self.last_val, self.best_val
        doc = {
            "model": self.run.model,
            "variant": self.run.variant,
            "seed": self.seed,
            "run_dir": str(self.run.run_dir),
            "state": self.state.name.lower(),
            "iter": self.iter,
            "max_iters": self.max_iters,
            "last_miou": last.miou if last else None,
            "last_aacc": last.aacc if last else None,
            "last_val_iter": last.iter if last else None,
            "best_miou": best.miou if best else None,
            "best_iter": best.iter if best else None,
            "metric": self.log.metric if self.log is not None else "mIoU",  # what last_miou/best_miou/curve hold
            "by_epoch": self.log.by_epoch if self.log is not None else False,
            "epoch": self.log.epoch if self.log is not None else None,
            "max_epochs": self.log.max_epochs if self.log is not None else None,
            "job_id": self.job_id,
            "user": self.user,
            "executor": self.meta.executor if self.meta else None,
            "layout": (self.meta.layout or None) if self.meta else None,
            "restarts": self.restarts,
            "scheduler_state": self.scheduler_state,
            "pending_reason": self.pending_reason or None,
            "queue_wait_s": None if self.queue_wait_s is None else round(self.queue_wait_s, 1),
            "gpu_hours": None if self.gpu_hours is None else round(self.gpu_hours, 4),
            "node": self.node or None,
            "elapsed_s": None if self.elapsed_s is None else round(self.elapsed_s, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "error": self.meta.error if self.meta else None,
            "lock_holder": self.lock_holder.to_json() if self.lock_holder else None,
            "curve": [[p.iter, p.miou, p.aacc] for p in self.curve],
            "starts": [start.to_json() for start in self.log.lineage] if self.log is not None else [],
            "notes": list(self.notes),
            "usage": self.usage.to_json() if self.usage is not None else None,
            **self.progress_json(),
        }
        doc.update(self.log.rejected_notes(doc) if self.log is not None else {})
        return finite_document(doc) if finite else doc


@dataclass(frozen=True)
class StatusReport:
    """The statuses of a set of runs, and a note when the scheduler did not answer."""

    statuses: tuple[RunStatus, ...]
    scheduler_note: str | None = None  # e.g. "scheduler unreachable: ..."


def collect_status(runs: Sequence[Run], *, now: float | None = None, read_log: ReadLog = read_run_log,
                   accounting: bool = False, ask: Callable[[list[str]], Answer] | None = None,
                   listings: Listings | None = None) -> StatusReport:
    """The status of every run, with one scheduler query for all SLURM jobs among them.

    ``read_log``: how to read a work dir's logs (``LogCache().read_run_log`` to read only
    what was appended since the last call). ``accounting``: also ask sacct, once, what every
    SLURM job of these runs was allocated (GPU-hours); not for ``--watch`` refreshes. ``ask``: the
    scheduler's answer for job ids (``--watch``: ``PacedScheduler.ask``, the last answer reused).
    ``listings``: run dirs this command listed already (``--root``'s discovery), not listed again.
    """
    now = time.time() if now is None else now
    found, note = gather(runs, now=now, read_log=read_log, accounting=accounting, ask=ask, listings=listings)
    # a live run's samples: read once it is decided to be live, the rest not
    return StatusReport(tuple(with_usage(decide(evidence), now) for evidence in found), note)


def decide(evidence: Evidence) -> RunStatus:
    """A run's state, its notes and who holds it, from its evidence alone: no file, clock or process is looked at."""
    meta, log = evidence.meta, evidence.log
    notes = list(log.warnings)
    if evidence.meta_note:
        notes.append(evidence.meta_note)
    max_iters = (meta.max_iters if meta else None) or log.max_iters
    info = None
    if meta is None:
        state = _state_without_meta(evidence, max_iters, notes)
    else:
        state, info = _state_of_claim(evidence, meta, notes)
    if state is RunState.RUNNING and (log.fresh_start or log.last_iter is None
                                      or (meta is not None and log.starts < meta.attempts)):
        state = RunState.STARTING  # the job runs; its newest start has logged no iteration yet
    if meta is not None and meta.lost_start:
        notes.append(meta.lost_start)
    notes += _log_notes(state, log)
    eta = None
    if state is RunState.RUNNING and log.seconds_per_iter and max_iters and log.last_iter is not None:
        eta = max(0, max_iters - log.last_iter) * log.seconds_per_iter
    queue_wait = None
    if info is not None and info.started is not None and info.submitted is not None and info.state != "PENDING":
        queue_wait = max(0.0, info.started - info.submitted)
    pending_reason = info.reason if info is not None and state in (RunState.PENDING, RunState.REQUEUED) else ""
    state, holder = _held(evidence, state, notes)
    return RunStatus(
        run=evidence.run,
        state=state,
        iter=log.last_iter,
        max_iters=max_iters,
        curve=log.curve,
        meta=meta,
        scheduler_state=info.state if info is not None else None,
        node=(info.node if info is not None else "") or _recorded_node(meta),
        elapsed_s=_elapsed(meta, log),
        eta_s=eta,
        lock_holder=holder,
        pending_reason=pending_reason,
        queue_wait_s=queue_wait,
        accounted_gpu_hours=allocated_hours(evidence.allocated, meta),
        notes=tuple(notes),
        log=log,
    )


def _state_of_claim(evidence: Evidence, meta: RunMeta, notes: list[str]) -> tuple[RunState, JobInfo | None]:
    """What the recorded lifecycle says, and while the claim is open, its job (the scheduler's word on it, or a
    local process); the job's scheduler record, where it counts."""
    lifecycle = meta.lifecycle
    if lifecycle.stage is Stage.FINISHED:
        return RunState.COMPLETED, None
    if lifecycle.stage is Stage.CANCELLED:
        return RunState.CANCELLED, None
    if not lifecycle.open:  # failed, or released by `prove-jobs unlock`
        return RunState.FAILED, None
    waiting = RunState.RUNNING if lifecycle.started else RunState.PENDING
    if meta.executor == "slurm":
        info = evidence.job
        if info is None:
            if evidence.scheduler_note:
                return waiting, None
            notes.append(f"job {meta.job_id} is unknown to SLURM and never recorded an end")
            return RunState.FAILED, None
        word, alive = slurm_state(info.state, from_accounting=info.from_accounting)
        if word is None:  # COMPLETED without the payload's record of it; a word we do not know
            word = waiting if alive else RunState.FAILED
        state = word
        if state is RunState.RUNNING and not lifecycle.started:
            state = RunState.PENDING  # allocated, payload not started yet
        elif state in (RunState.PENDING, RunState.REQUEUED):
            # it trained in this submission, then was stopped: requeued; else still waiting
            state = RunState.REQUEUED if lifecycle.started else RunState.PENDING
        notes += scheduler_notes(state, meta, info)
        return state, info
    if meta.host != evidence.here:
        notes.append(f"local job on {meta.host}: liveness not checked from here")
        return waiting, None
    if evidence.process_alive:
        return waiting, None
    notes.append(f"local process {meta.pid} is gone without recording an end")
    return RunState.FAILED, None


def _held(evidence: Evidence, state: RunState, notes: list[str]) -> tuple[RunState, LockHolder | None]:
    """Who holds the run and, where this user's submit met another's claim, the conflict: the state it makes."""
    holder = evidence.holder
    if holder is not None and holder.stale:
        # describe() of the live holder: "(stale)" would only repeat the sentence's first word
        notes.append(f"stale claim by {replace(holder, stale=False).describe()}: "
                     "`prove-jobs resubmit` or `prove-jobs unlock --stale`")
    if evidence.conflict_note:
        notes.append(evidence.conflict_note)
    conflict = evidence.conflict
    # Completed, or cancelled on purpose (by its holder, or by scancel): not a conflict to resubmit.
    if conflict is None or state in (RunState.COMPLETED, RunState.CANCELLED):
        return state, holder
    if holder is not None and holder.user == evidence.me and not holder.stale:
        return state, holder  # our own other submission holds it
    if holder is None:
        # The holder's claim ended without completing the run: ours to resubmit.
        holder = replace(conflict.holder, stale=True)
    if conflict.queued_job_id:
        notes.append(f"queued as slurm job {conflict.queued_job_id}: starts when {holder.user}'s job "
                     f"{conflict.after_job_id} ends")
    return RunState.LOCK_CONFLICT, holder


def _recorded_node(meta: RunMeta | None) -> str:
    """Where the newest start ran, as the job recorded it (squeue no longer knows): its node list across nodes,
    a local job's host."""
    if meta is None or not meta.started_at:
        return ""
    return meta.nodes or (meta.host if meta.executor == "local" else "")


def _elapsed(meta: RunMeta | None, log: RunLog) -> float | None:
    """The wall time of the starts that produced the result (``RunLog.wall_s``, docs/status.md "Time"): each from
    its first training record to its last training line, both written by the node's clock.

    Never against this host's clock (a node's may differ), so a run that died stops counting where
    its logs end, and a run shows the same with or without prove-jobs' metadata. Without a text log
    (no timestamps), from the times the payload recorded on the node, once it ended there: not
    from ``cancelled_at`` (written by ``prove-jobs cancel`` on the login node's clock).
    """
    if log.wall_s is not None:
        return log.wall_s
    if meta is not None and meta.started_at is not None:
        end = meta.finished_at or meta.failed_at  # both written by the job, once it started
        return None if end is None else max(0.0, end - meta.started_at)
    return None


def _log_notes(state: RunState, log: RunLog) -> list[str]:
    if state in (RunState.RUNNING, RunState.STARTING, RunState.PENDING):
        return []
    return [f"{path}: its last line is cut off (the training stopped while writing it)" for path in log.torn]


def _state_without_meta(evidence: Evidence, max_iters: int | None, notes: list[str]) -> RunState:
    """A work dir some other tool started (no prove-jobs claim): judge it by its logs, checkpoints and lock."""
    log = evidence.log
    if log.last_iter is None and not log.starts:
        return RunState.NOT_SUBMITTED
    if max_iters is not None and log.last_iter is not None and (
            log.last_iter >= max_iters or evidence.listing.may_have(f"iter_{max_iters}.pth")):
        return RunState.COMPLETED
    quiet: float = QUIET_AFTER_S
    if log.seconds_per_iter and log.log_every:
        quiet = max(quiet, QUIET_LOG_INTERVALS * log.seconds_per_iter * log.log_every)
    if log.last_write is not None and evidence.now - log.last_write < quiet:
        return RunState.RUNNING if log.last_iter is not None else RunState.STARTING
    if evidence.lock_held is True:
        return RunState.RUNNING if log.last_iter is not None else RunState.STARTING
    if log.last_write is not None:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(log.last_write))
        notes.append(f"logs idle since {since}, not finished; no process holds its training lock: stopped")
    return RunState.STOPPED
