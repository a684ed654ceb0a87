"""Why a run given to ``submit`` (or ``resubmit``, ``release``) was left alone: a reason to test, a line to show."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

TYPE_CHECKING = False  # not typing's: see cli/parser.py
if TYPE_CHECKING:
    from prove_jobs.errors import RunError
    from prove_jobs.metadata import RunMeta
    from prove_jobs.runs import Run
    from prove_jobs.scheduler import Answer


class SkipReason(Enum):
    """Why a run given to ``submit`` (or ``resubmit``, ``release``) was left alone."""

    COMPLETED = "completed"
    """Its metadata says it finished (whoever trained it)."""
    FINISHED = "finished"
    """Its final checkpoint is there, or what would say whether it finished cannot be read: never trained over."""
    CANCELLED = "cancelled"
    """Someone stopped it on purpose: it stays stopped until its model is named."""
    DIVERGED = "diverged"
    """``resubmit --failed``: its loss diverged; ``--force-diverged`` trains it again."""


@dataclass(frozen=True)
class Skip:
    """A run left alone: why, and what to tell its owner."""

    reason: SkipReason
    detail: str  # in full: what and how to train it again (where it starts with the run dir, with it)
    brief: str = ""  # the same for a line that names the run: without the run dir; "" when it is the detail

    @property
    def short(self) -> str:
        return self.brief or self.detail


def finished(run: Run, meta: RunMeta | None, refusal: RunError) -> Skip:
    """The skip of a run ``refuse_finished`` refused; a completed one's line names it, not its run dir."""
    if meta is not None and meta.finished_at is not None:
        return Skip(SkipReason.COMPLETED, str(refusal), str(refusal).removeprefix(f"{run.run_dir}: "))
    return Skip(SkipReason.FINISHED, str(refusal))


def cancelled_on_purpose(meta: RunMeta | None, jobs: Answer | None) -> str | None:
    """``cancelled by alice on 2026-12-01 21:40`` when someone cancelled the run's last submission:
    with ``prove-jobs cancel``, or with scancel (SLURM says CANCELLED of its job)."""
    if meta is None:
        return None
    from prove_jobs.metadata import Stage

    lifecycle = meta.lifecycle
    if lifecycle.stage is Stage.FINISHED:
        return None
    if lifecycle.stage is Stage.CANCELLED:
        import time

        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(lifecycle.at))
        return f"cancelled by {lifecycle.by or meta.user} on {when}"
    info = jobs.get(meta.job_id) if jobs is not None and meta.job_id and meta.executor == "slurm" else None
    if info is not None and info.state == "CANCELLED" and lifecycle.stage is not Stage.FAILED:
        return f"its SLURM job {meta.job_id} was cancelled (scancel)"
    return None
