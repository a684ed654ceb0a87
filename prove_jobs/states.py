"""The states a run can be in, and SLURM's job states translated into them, in one place.

Standard library only: the CLI needs the state names for ``--state`` before it imports anything else.
"""

from __future__ import annotations

import enum


class RunState(enum.Enum):
    NOT_SUBMITTED = "not submitted"
    """No job was ever submitted for this run and its work dir holds no training logs."""
    PENDING = "pending"
    """Submitted and waiting in the queue (or a local job that has not started training)."""
    STARTING = "starting"
    """The job started, but its training has logged no iteration yet (building the model, loading data)."""
    RUNNING = "running"
    """The job is training: see ``iter`` / ``max_iters`` (and ``restarts`` after a requeue)."""
    REQUEUED = "requeued"
    """The job was stopped (preempted, or at its time limit) and waits in the queue to resume
    from its last checkpoint; ``restarts`` counts the starts so far after such stops."""
    COMPLETED = "completed"
    """Training reached its last iteration."""
    STOPPED = "stopped"
    """A run started outside prove-jobs whose logs have been idle for a while, not finished, with no
    sign of life (no process holds its training lock, no known job writes it)."""
    FAILED = "failed"
    """The job ended without finishing: an exception, a crash, or a job that vanished."""
    CANCELLED = "cancelled"
    """Someone cancelled the job; it stays cancelled until someone submits it again by name."""
    TIMEOUT = "timeout"
    """The scheduler stopped the job at its time limit and it was not requeued."""
    LOCK_CONFLICT = "lock conflict"
    """Your submit met another user's claim on this run: see ``lock_holder``; when the holder
    is gone (``stale``), ``prove-jobs resubmit --lock-conflicts`` submits it."""

    @property
    def icon(self) -> str:
        """The marker the hand-written report puts before a state (dashboard and report alike)."""
        return _ICONS[self]

    @property
    def key(self) -> str:
        """The name in ``--json`` and ``--state``: ``lock_conflict``."""
        return self.name.lower()


_ICONS = {
    RunState.NOT_SUBMITTED: "·",
    RunState.PENDING: "⏳",
    RunState.STARTING: "🔄",
    RunState.RUNNING: "🔄",
    RunState.REQUEUED: "🔁",
    RunState.COMPLETED: "✅",
    RunState.STOPPED: "⏸",
    RunState.FAILED: "❌",
    RunState.CANCELLED: "⛔",
    RunState.TIMEOUT: "⌛",
    RunState.LOCK_CONFLICT: "⏳",
}

# SLURM's job state word -> (what it means for a run, whether the job may still start or is running).
# "Alive" protects a claim: a job that SLURM may still run (or resume) must never look stale.
# COMPLETED says nothing about the training: the run's own record decides (None).
SLURM_STATES = {
    "PENDING": (RunState.PENDING, True),
    "CONFIGURING": (RunState.PENDING, True),
    "REQUEUED": (RunState.PENDING, True),
    "REQUEUE_HOLD": (RunState.PENDING, True),
    "REQUEUE_FED": (RunState.PENDING, True),
    "RESV_DEL_HOLD": (RunState.PENDING, True),
    "SPECIAL_EXIT": (RunState.PENDING, True),  # held after a requeue until someone releases it
    "SUSPENDED": (RunState.PENDING, True),
    "STOPPED": (RunState.PENDING, True),
    # PREEMPTED: requeued next with PreemptMode=REQUEUE; squeue shows it for an instant.
    "PREEMPTED": (RunState.REQUEUED, True),
    "RUNNING": (RunState.RUNNING, True),
    "COMPLETING": (RunState.RUNNING, True),
    "STAGE_OUT": (RunState.RUNNING, True),
    "SIGNALING": (RunState.RUNNING, True),
    "RESIZING": (RunState.RUNNING, True),
    "COMPLETED": (None, False),
    "CANCELLED": (RunState.CANCELLED, False),
    "TIMEOUT": (RunState.TIMEOUT, False),
    "DEADLINE": (RunState.TIMEOUT, False),
    "FAILED": (RunState.FAILED, False),
    "NODE_FAIL": (RunState.FAILED, False),
    "OUT_OF_MEMORY": (RunState.FAILED, False),
    "BOOT_FAIL": (RunState.FAILED, False),
    "REVOKED": (RunState.CANCELLED, False),  # a federation sibling ran it instead
}


def slurm_state(word: str, *, from_accounting: bool = False) -> tuple[RunState | None, bool]:
    """SLURM's job state word -> (RunState or ``None`` when SLURM's word does not settle it, alive).

    A word this table does not know is taken as alive: a lock is never broken on a guess.
    PREEMPTED in the accounting (sacct) is the job's last word, not a step before its requeue.
    """
    if from_accounting and word == "PREEMPTED":
        return RunState.FAILED, False
    return SLURM_STATES.get(word, (None, True))


def slurm_alive(word: str, *, from_accounting: bool = False) -> bool:
    return slurm_state(word, from_accounting=from_accounting)[1]


def translate_slurm_state(state: str) -> RunState | None:
    """SLURM's job state word -> RunState; ``None`` when SLURM's word does not settle it."""
    return slurm_state(state)[0]
