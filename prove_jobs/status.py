"""Where each run stands, computed from the run's metadata, its logs and the scheduler.

Nothing here is stored: every call derives the state afresh (one batched scheduler query
for all runs), so the answer cannot drift from what is on disk and in the queue.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prove_jobs.errors import ProveJobsError, SchedulerUnavailable
from prove_jobs.locks import LockHolder, claim_is_open, conflict_for, holder_of
from prove_jobs.logs import RunLog, ValPoint, read_run_log
from prove_jobs.runs import (
    CONFIG_DIR,
    JOB_STDERR,
    META_FILE,
    Run,
    RunMeta,
    current_host,
    current_user,
    pid_alive,
    read_meta,
    tail_lines,
)
from prove_jobs.scheduler import query_jobs

# A run started by hand (no prove-jobs metadata) whose logs have not moved for this
# long is taken as stopped rather than running.
QUIET_AFTER_S = 15 * 60


class RunState(enum.Enum):
    NOT_SUBMITTED = "not submitted"
    """No job was ever submitted for this run and its work dir holds no training logs."""
    PENDING = "pending"
    """Submitted and waiting in the queue (or a local job that has not started training)."""
    RUNNING = "running"
    """The job is training: see ``iter`` / ``max_iters`` (and ``restarts`` after a requeue)."""
    REQUEUED = "requeued"
    """The job was stopped (preempted, or at its time limit) and waits in the queue to resume
    from its last checkpoint; ``restarts`` counts the starts so far after such stops."""
    COMPLETED = "completed"
    """Training reached its last iteration."""
    FAILED = "failed"
    """The job ended without finishing: an exception, a crash, or a job that vanished."""
    CANCELLED = "cancelled"
    """Someone cancelled the job."""
    TIMEOUT = "timeout"
    """The scheduler stopped the job at its time limit and it was not requeued."""
    LOCK_CONFLICT = "lock conflict"
    """Your submit met another user's claim on this run: see ``lock_holder``; when the holder
    is gone (``stale``), ``prove-jobs resubmit --lock-conflicts`` submits it."""

    @property
    def icon(self) -> str:
        """The marker the hand-written report puts before a state (dashboard and report alike)."""
        return _ICONS[self]


_ICONS = {
    RunState.NOT_SUBMITTED: "·",
    RunState.PENDING: "⏳",
    RunState.RUNNING: "🔄",
    RunState.REQUEUED: "🔁",
    RunState.COMPLETED: "✅",
    RunState.FAILED: "❌",
    RunState.CANCELLED: "⛔",
    RunState.TIMEOUT: "⌛",
    RunState.LOCK_CONFLICT: "⏳",
}


def translate_slurm_state(state: str) -> RunState | None:
    """SLURM's job state word -> RunState; ``None`` when SLURM's word does not settle it."""
    return _SLURM_STATES.get(state)


_SLURM_STATES = {
    "PENDING": RunState.PENDING,
    "CONFIGURING": RunState.PENDING,
    "REQUEUED": RunState.PENDING,
    "REQUEUE_HOLD": RunState.PENDING,
    "REQUEUE_FED": RunState.PENDING,
    "RESV_DEL_HOLD": RunState.PENDING,
    "SUSPENDED": RunState.PENDING,
    "RUNNING": RunState.RUNNING,
    "COMPLETING": RunState.RUNNING,
    "STAGE_OUT": RunState.RUNNING,
    "CANCELLED": RunState.CANCELLED,
    "TIMEOUT": RunState.TIMEOUT,
    "DEADLINE": RunState.TIMEOUT,
    "FAILED": RunState.FAILED,
    "NODE_FAIL": RunState.FAILED,
    "OUT_OF_MEMORY": RunState.FAILED,
    "BOOT_FAIL": RunState.FAILED,
    "PREEMPTED": RunState.FAILED,
}


@dataclass(frozen=True)
class RunStatus:
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
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def last_val(self) -> ValPoint | None:
        return self.curve[-1] if self.curve else None

    @property
    def best_val(self) -> ValPoint | None:
        scored = [p for p in self.curve if p.miou is not None]
        return max(scored, key=lambda p: (p.miou, p.iter)) if scored else None

    @property
    def restarts(self) -> int:
        return self.meta.restarts if self.meta else 0

    @property
    def job_id(self) -> str | None:
        return self.meta.job_id if self.meta else None

    @property
    def user(self) -> str | None:
        return self.meta.user if self.meta else None

    def to_json(self) -> dict[str, Any]:
        last, best = self.last_val, self.best_val
        return {
            "model": self.run.model,
            "variant": self.run.variant,
            "run_dir": str(self.run.run_dir),
            "state": self.state.name.lower(),
            "iter": self.iter,
            "max_iters": self.max_iters,
            "last_miou": last.miou if last else None,
            "last_aacc": last.aacc if last else None,
            "last_val_iter": last.iter if last else None,
            "best_miou": best.miou if best else None,
            "best_iter": best.iter if best else None,
            "job_id": self.job_id,
            "user": self.user,
            "executor": self.meta.executor if self.meta else None,
            "restarts": self.restarts,
            "scheduler_state": self.scheduler_state,
            "node": self.node or None,
            "elapsed_s": None if self.elapsed_s is None else round(self.elapsed_s, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "error": self.meta.error if self.meta else None,
            "lock_holder": self.lock_holder.to_json() if self.lock_holder else None,
            "curve": [[p.iter, p.miou, p.aacc] for p in self.curve],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class StatusReport:
    statuses: tuple[RunStatus, ...]
    scheduler_note: str | None = None  # e.g. "scheduler unreachable: ..."


def collect_status(
    runs: Sequence[Run], *, now: float | None = None, read_log: Callable[[Path], RunLog] = read_run_log
) -> StatusReport:
    """The status of every run, with one scheduler query for all SLURM jobs among them.

    ``read_log``: how to read a work dir's logs (``LogCache().read_run_log`` to read only
    what was appended since the last call).
    """
    now = time.time() if now is None else now
    metas = {run: _read_meta_or_note(run) for run in runs}
    slurm_ids = [m.job_id for m, _ in metas.values() if m and m.executor == "slurm" and m.job_id and claim_is_open(m)]
    jobs: dict[str, Any] = {}
    note = None
    if slurm_ids:
        try:
            jobs = query_jobs(slurm_ids)
        except SchedulerUnavailable as exc:
            note = f"scheduler unreachable: {exc}"
    states = None if note else {job_id: info.state for job_id, info in jobs.items()}
    statuses = tuple(
        _with_lock(_status(run, meta, read_log(run.run_dir), jobs, now, note, meta_note), states)
        for run, (meta, meta_note) in metas.items()
    )
    return StatusReport(statuses, note)


def _with_lock(status: RunStatus, slurm_states: dict[str, str] | None) -> RunStatus:
    """Add who holds the run and, where this user's submit met another's claim, the conflict."""
    run_dir = status.run.run_dir
    holder = holder_of(run_dir, status.meta, slurm_states, lock_mode=status.meta.lock_mode) if status.meta else None
    notes = list(status.notes)
    if holder is not None and holder.stale:
        # describe() of the live holder: "(stale)" would only repeat the sentence's first word
        notes.append(f"stale claim by {replace(holder, stale=False).describe()}: "
                     "`prove-jobs resubmit` or `prove-jobs unlock --stale`")
    conflict = conflict_for(run_dir)
    if conflict is None or status.state is RunState.COMPLETED:
        return replace(status, lock_holder=holder, notes=tuple(notes))
    if holder is not None and holder.user == current_user() and not holder.stale:
        return replace(status, lock_holder=holder, notes=tuple(notes))  # our own other submission holds it
    if holder is None:
        # The holder's claim ended without completing the run: ours to resubmit.
        holder = replace(LockHolder.from_json(conflict["holder"]), stale=True)
    if conflict.get("queued_job_id"):
        notes.append(f"queued as slurm job {conflict['queued_job_id']}: starts when {holder.user}'s job "
                     f"{conflict.get('after_job_id')} ends")
    return replace(status, state=RunState.LOCK_CONFLICT, lock_holder=holder, notes=tuple(notes))


def _read_meta_or_note(run: Run) -> tuple[RunMeta | None, str | None]:
    try:
        return read_meta(run.run_dir), None
    except ProveJobsError as exc:
        return None, str(exc)


def _status(
    run: Run,
    meta: RunMeta | None,
    log: RunLog,
    jobs: dict[str, Any],
    now: float,
    scheduler_note: str | None,
    meta_note: str | None,
) -> RunStatus:
    notes = list(log.warnings)
    if meta_note:
        notes.append(meta_note)
    max_iters = (meta.max_iters if meta else None) or log.max_iters
    scheduler_state = None
    node = ""
    if meta is None:
        state = _state_without_meta(run.run_dir, log, max_iters, now)
    elif meta.finished_at is not None:
        state = RunState.COMPLETED
    elif meta.cancelled_at is not None:
        state = RunState.CANCELLED
    elif meta.failed_at is not None or meta.released_at is not None:
        state = RunState.FAILED
    elif meta.executor == "slurm":
        info = jobs.get(meta.job_id or "")
        if info is not None:
            scheduler_state, node = info.state, info.node
            state = translate_slurm_state(info.state) or RunState.FAILED
            if state is RunState.RUNNING and meta.started_at is None:
                state = RunState.PENDING  # allocated, payload not started yet
            elif (state is RunState.PENDING or info.state == "PREEMPTED") and meta.started_at is not None:
                state = RunState.REQUEUED  # it trained in this submission, then was stopped
        elif scheduler_note:
            state = RunState.RUNNING if meta.started_at else RunState.PENDING
        else:
            state = RunState.FAILED
            notes.append(f"job {meta.job_id} is unknown to SLURM and never recorded an end")
    elif meta.host != current_host():
        state = RunState.RUNNING if meta.started_at else RunState.PENDING
        notes.append(f"local job on {meta.host}: liveness not checked from here")
    elif meta.pid is not None and pid_alive(meta.pid):
        state = RunState.RUNNING if meta.started_at else RunState.PENDING
    else:
        state = RunState.FAILED
        notes.append(f"local process {meta.pid} is gone without recording an end")

    elapsed = eta = None
    if meta is not None and meta.started_at is not None:
        elapsed = (meta.finished_at or meta.failed_at or meta.cancelled_at or now) - meta.started_at
    elif log.first_time is not None and log.last_time is not None:
        elapsed = log.last_time - log.first_time
    if state is RunState.RUNNING and log.seconds_per_iter and max_iters and log.last_iter is not None:
        eta = max(0, max_iters - log.last_iter) * log.seconds_per_iter
    return RunStatus(
        run=run,
        state=state,
        iter=log.last_iter,
        max_iters=max_iters,
        curve=log.curve,
        meta=meta,
        scheduler_state=scheduler_state,
        node=node or (meta.host if meta and meta.executor == "local" and meta.started_at else ""),
        elapsed_s=elapsed,
        eta_s=eta,
        notes=tuple(notes),
    )


def _state_without_meta(run_dir: Path, log: RunLog, max_iters: int | None, now: float) -> RunState:
    """A work dir some other tool started: judge it by its logs and checkpoints alone."""
    if log.last_iter is None:
        return RunState.NOT_SUBMITTED
    if max_iters is not None and (log.last_iter >= max_iters or (run_dir / f"iter_{max_iters}.pth").exists()):
        return RunState.COMPLETED
    if log.last_time is not None and now - log.last_time < QUIET_AFTER_S:
        return RunState.RUNNING
    return RunState.FAILED


def failure_details(status: RunStatus, lines: int = 12) -> list[str]:
    """Why a run ended without finishing: the recorded error, then the end of its job's stderr."""
    if status.state not in (RunState.FAILED, RunState.TIMEOUT, RunState.CANCELLED):
        return []
    details = []
    if status.meta is not None and status.meta.error:
        details.append(f"error: {status.meta.error}")
    err = status.run.run_dir / CONFIG_DIR / JOB_STDERR
    tail = tail_lines(err, lines)
    if tail:
        details.append(f"last {len(tail)} lines of {err} (job {status.job_id}):")
        details += [f"  {line}" for line in tail]
    return details


def discover_runs(root: Path) -> list[Run]:
    """Every work dir under ``root/<VARIANT>/<method>/<dataset>/<model>/``, ours or not."""
    runs = []
    for model_dir in sorted(root.glob("*/*/*/*")):
        if not model_dir.is_dir() or model_dir.parts[-4].startswith("."):
            continue
        if (model_dir / META_FILE).exists() or (model_dir / "last_checkpoint").exists() or any(
            child.is_dir() and child.name[:8].isdigit() for child in model_dir.iterdir()
        ):
            variant, method, dataset, model = model_dir.parts[-4:]
            runs.append(Run(model=model, variant=variant, method=method, dataset=dataset, data_root=root))
    return runs
