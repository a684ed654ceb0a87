"""Following and stopping submitted runs: wait, cancel, unlock.

Each asks the scheduler once per round for all its runs' jobs, never once per run, and never
while holding a run's mutex.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prove_jobs.claims import claim_alive, open_slurm_jobs, unlock
from prove_jobs.errors import ProveJobsError, RunError
from prove_jobs.identity import current_host, current_user, same_process
from prove_jobs.locks import training_lock_held
from prove_jobs.metadata import RunMeta, now, read_meta, update_meta
from prove_jobs.runs import META_FILE, Run
from prove_jobs.scheduler import ask_or_none, scancel

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.scheduler import Answer
    from prove_jobs.status import RunStatus


def wait(
    runs: Sequence[Run],
    *,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    on_poll: Callable[[], None] | None = None,
) -> dict[Run, RunMeta | None]:
    """Block until no run has a live job; returns each run's final metadata."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        metas = {run: read_meta(run.run_dir) for run in runs}
        jobs = ask_or_none(open_slurm_jobs(list(metas.values())))
        if not any(meta is not None and _still_running(run.run_dir, meta, jobs) for run, meta in metas.items()):
            return metas
        if deadline is not None and time.monotonic() > deadline:
            raise ProveJobsError(f"timed out after {timeout_s:.0f} s waiting for {len(runs)} run(s)")
        if on_poll is not None:
            on_poll()
        time.sleep(poll_s)


@dataclass
class WaitOutcome:
    """What :func:`wait_for` saw: how many runs it was asked about, those it followed (the submitted ones),
    how each ended, and whether Ctrl-C (or a timeout: ``error``) stopped the waiting, not the jobs."""

    asked: int
    waited: list[Run]
    statuses: list[RunStatus] = field(default_factory=list)
    interrupted: bool = False
    error: ProveJobsError | None = None
    warnings: list[str] = field(default_factory=list)  # the log cache's: not saved

    def start_line(self) -> str:
        """``waiting for 3 run(s) (1 never submitted)...``, or why there is nothing to wait for."""
        if not self.waited:
            return (f"nothing to wait for: none of these {self.asked} run(s) has been submitted" if self.asked
                    else "nothing to wait for: no run was asked for")
        never = self.asked - len(self.waited)
        return f"waiting for {len(self.waited)} run(s)" + (f" ({never} never submitted)" if never else "") + "..."

    @property
    def unfinished(self) -> list[RunStatus]:
        """The runs that ended without completing."""
        from prove_jobs.states import RunState

        return [s for s in self.statuses if s.state is not RunState.COMPLETED]

    def summary(self) -> str:
        """``4 run(s) ended: 3 completed, 1 failed``."""
        from collections import Counter

        counts = Counter(s.state.value for s in self.statuses)
        return f"{len(self.statuses)} run(s) ended: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def wait_for(runs: Sequence[Run], *, timeout_s: float | None = None, poll_s: float = 2.0,
             on_start: Callable[[WaitOutcome], None] = lambda outcome: None,
             on_poll: Callable[[list[RunStatus]], None] = lambda statuses: None) -> WaitOutcome:
    """:func:`wait` for the submitted ones of ``runs``, their statuses read through the log cache: ``on_start``
    is told which those are, ``on_poll`` where they stand while they run. Ctrl-C stops the waiting, not the jobs."""
    from prove_jobs.status_source import StatusSource

    outcome = WaitOutcome(len(runs), [run for run in runs if (run.run_dir / META_FILE).exists()])
    on_start(outcome)
    if not outcome.waited:
        return outcome
    source = StatusSource(outcome.waited)
    try:
        wait(outcome.waited, timeout_s=timeout_s, poll_s=poll_s, on_poll=lambda: on_poll(source.collect()[0]))
        outcome.statuses = source.collect()[0]
    except KeyboardInterrupt:
        outcome.interrupted = True
    except ProveJobsError as exc:  # a timeout: raised by the caller, after the cache's warning
        outcome.error = exc
    finally:
        warning = source.close()
        outcome.warnings += [warning] if warning else []
    return outcome


def _still_running(run_dir: Path, meta: RunMeta, jobs: Answer | None) -> bool:
    alive = claim_alive(meta, jobs)
    if alive is False:
        # A process whose main thread is gone reads as dead (zombie leader) while its other threads
        # (torch's) still exit; its files, the training lock with them, close with the last one.
        return training_lock_held(run_dir, meta.lock_mode) is True
    # Unknown: keep waiting on a SLURM job (the scheduler may answer next time); a local
    # job on another host cannot be followed from here.
    return alive is True or (alive is None and meta.executor == "slurm")


@dataclass
class CancelResult:
    """What ``cancel`` did: the runs whose jobs it stopped, and those it could not stop, each with why."""

    cancelled: list[Run] = field(default_factory=list)
    refused: list[tuple[Run, str]] = field(default_factory=list)


def cancel(runs: Sequence[Run]) -> CancelResult:
    """Cancel the live jobs of ``runs`` (one scancel for all SLURM jobs); one that cannot be cancelled
    (another user's, a local job on another host) does not stop the others."""
    metas = {run: read_meta(run.run_dir) for run in runs}
    jobs = ask_or_none(open_slurm_jobs(list(metas.values())))
    live = [(run, meta) for run, meta in metas.items() if meta is not None and claim_alive(meta, jobs) is True]
    result = CancelResult()
    slurm = {meta.job_id: (run, meta) for run, meta in live if meta.executor == "slurm" and meta.job_id}
    refused = scancel(list(slurm)) if slurm else {}
    for job_id, (run, meta) in slurm.items():
        if job_id in refused:
            who = f" (job of {meta.user})" if meta.user else ""  # who submitted it: its claim's word
            result.refused.append((run, f"SLURM job {job_id}{who}: {refused[job_id]}"))
        else:
            result.cancelled.append(run)
    for run, meta in live:
        if meta.executor != "local":
            continue
        if meta.host != current_host():
            result.refused.append((run, f"local job on {meta.host}; cancel it from there"))
            continue
        try:
            _kill_local(meta)
        except PermissionError:
            result.refused.append((run, f"local job {meta.job_id} belongs to {meta.user}: only they (or root) may "
                                        "stop it"))
            continue
        result.cancelled.append(run)
    for run in result.cancelled:
        update_meta(run.run_dir, cancelled_at=now(), cancelled_by=current_user())
    return result


def _kill_local(meta: RunMeta, grace_s: float = 10.0) -> None:
    """Stop a local job's whole process group: SIGINT, then SIGKILL after ``grace_s``.

    Not SIGTERM: submitit's task processes ignore it ("Bypassing signal SIGTERM"), as SLURM
    sends it ahead of a preemption; SIGINT is what submitit's own LocalJob.cancel sends.
    Only processes that are still the ones recorded (same start time, same boot) are signalled:
    a pid reused since by someone else's process is left alone.
    """
    assert meta.job_id is not None
    # The controller leads its own session (see executors.DetachedLocalExecutor): signal the group.
    recorded = {(int(meta.job_id), meta.job_start), (meta.pid or int(meta.job_id), meta.pid_start)}
    groups = set()
    for pid, start in recorded:
        if same_process(pid, start, meta.boot_id):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.1)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class Unlocked:
    """What ``unlock`` did with one run dir: released its claim or not, and what it found."""

    run_dir: Path
    released: bool
    what: str

    @property
    def live(self) -> bool:
        """Left alone because its claim is live (not for want of one)."""
        return not self.released and self.what != "no claim"  # claims.unlock's word for a run dir without one


def unlock_runs(run_dirs: Sequence[Path], *, force: bool = False) -> list[Unlocked]:
    """Release the stale claims on ``run_dirs`` (live ones only with ``force``)."""
    for run_dir in run_dirs:
        if not (run_dir / META_FILE).exists():
            raise ProveJobsError(f"{run_dir}: not a run dir submitted by prove-jobs (no prove_run.json)")
    metas = []
    for run_dir in run_dirs:
        with contextlib.suppress(RunError):
            metas.append(read_meta(run_dir))
    jobs = ask_or_none(open_slurm_jobs(metas))
    return [Unlocked(run_dir, *unlock(run_dir, jobs, force=force)) for run_dir in run_dirs]
