"""Submitting runs again: after a lock conflict once the holder is gone, or after a failure.

Sits above ``status`` (which runs failed) and ``submit`` (how to queue them): the CLI only
parses and prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prove_jobs.claims import LockHolder
from prove_jobs.conflicts import clear_conflict, recorded_conflict
from prove_jobs.errors import ProveJobsError
from prove_jobs.metadata import read_meta_quietly
from prove_jobs.run_filter import RunFilter
from prove_jobs.runs import Run
from prove_jobs.scheduler import ask_or_none
from prove_jobs.skip import Skip, SkipReason, cancelled_on_purpose
from prove_jobs.spec import Sweep, load_sweep
from prove_jobs.states import RunState
from prove_jobs.submit import (
    Submission,
    SubmitResult,
    queue_after_holder,
    queued_behind,
    submit,
)

SweepFor = Callable[[Run, str], Sweep]  # (run, the sweep path recorded with it) -> the sweep to submit it with


@dataclass
class ResubmitResult:
    """What one round of ``resubmit --lock-conflicts`` did, run by run."""

    submitted: list[Submission] = field(default_factory=list)
    still_held: list[tuple[Run, LockHolder]] = field(default_factory=list)
    settled: list[tuple[Run, Skip]] = field(default_factory=list)  # nothing left to do, with why
    queued_after: list[tuple[Submission, LockHolder]] = field(default_factory=list)  # --after-holder


@dataclass
class ResubmitOutcome:
    """What ``resubmit`` did: with ``--failed``, the failed runs submitted again; with ``--lock-conflicts``, its
    last round; and every job either started (what ``--wait`` follows to its end)."""

    failed: SubmitResult | None = None
    conflicts: ResubmitResult | None = None
    started: list[Run] = field(default_factory=list)  # submitted again (not those queued behind a holder)

    @property
    def held(self) -> bool:
        """Runs left unsubmitted for a lock conflict (exit 1): the last round's, else ``--failed``'s."""
        if self.conflicts is not None:
            return bool(self.conflicts.still_held)
        return self.failed is not None and bool(self.failed.conflicts)


def runs_to_resubmit(sweep: Path | None, *, root: Path | None = None, data_root: Path | None = None,
                     only: RunFilter | None = None) -> tuple[list[Run], SweepFor]:
    """The runs ``only`` names: a sweep file's, submitted with it; or those found under ``root``, each submitted
    with the sweep recorded in it."""
    only = only or RunFilter()
    if root is not None:
        from prove_jobs.discover import discover_runs

        return only.found(discover_runs(root.absolute())), recorded_sweeps()
    if sweep is None:
        raise ProveJobsError("resubmit: give a sweep file or --root DIR")
    loaded = load_sweep(sweep, data_root=data_root)
    return loaded.select(only), sweep_of(loaded)


def sweep_of(sweep: Sweep) -> SweepFor:
    """Every run is submitted with ``sweep`` (the sweep file was named on the command line)."""
    return lambda run, recorded: sweep


def recorded_sweeps() -> SweepFor:
    """Each run is submitted with the sweep recorded with it (``--root``), each sweep loaded once.

    The path comes from a group-writable record and the sweep names the templates that will be
    trained: it is followed only if this user could have named it (see :func:`trusted_sweep`).
    """
    loaded: dict[str, Sweep] = {}

    def sweep_for(run: Run, recorded: str) -> Sweep:
        if not recorded:
            raise ProveJobsError(f"{run.run_dir}: no sweep file is recorded for this run; pass SWEEP")
        if recorded not in loaded:
            trusted_sweep(run, Path(recorded))
            loaded[recorded] = load_sweep(Path(recorded), data_root=run.data_root)
            trusted_sweep(run, loaded[recorded].templates_dir)
        return loaded[recorded]

    return sweep_for


def trusted_sweep(run: Run, path: Path) -> None:
    """Refuse a recorded sweep file (or its templates folder) that someone else could have rewritten:
    one owned by another user and writable by its group or by anyone."""
    import os

    try:
        st = path.stat()
    except OSError as exc:
        raise ProveJobsError(f"{run.run_dir}: the sweep recorded for it, {path}, cannot be read ({exc.strerror}); "
                             "pass SWEEP") from None
    if st.st_uid != os.geteuid() and st.st_mode & 0o022:
        from prove_jobs.identity import file_owner

        raise ProveJobsError(f"{run.run_dir}: the sweep recorded for it, {path}, belongs to {file_owner(path)} and "
                             "others may rewrite it: not followed; name the sweep you mean: "
                             "`prove-jobs resubmit SWEEP --lock-conflicts`")


def by_sweep(pairs: Iterable[tuple[Sweep, Run]]) -> list[tuple[Sweep, list[Run]]]:
    """Runs grouped by the sweep they are submitted with, in first-seen order."""
    groups: dict[Path, tuple[Sweep, list[Run]]] = {}
    for sweep, run in pairs:
        groups.setdefault(sweep.path, (sweep, []))[1].append(run)
    return list(groups.values())


def resubmit_lock_conflicts(runs: Sequence[Run], sweep_for: SweepFor, *, executor: str = "auto",
                            after_holder: bool = False) -> ResubmitResult:
    """Submit every run of ``runs`` on which this user met a lock conflict whose holder is gone.

    Runs still held stay in conflict; runs the holder completed are settled, not retrained.
    ``after_holder``: a run still held by a SLURM job is queued behind it
    (``--dependency=afterany``) and starts by itself when the holder's job ends.
    """
    from prove_jobs.status import collect_status

    result = ResubmitResult()
    to_submit: list[tuple[Sweep, Run]] = []
    conflicted = [(run, conflict) for run in runs if (conflict := recorded_conflict(run.run_dir)) is not None]
    states = {s.run: s for s in collect_status([run for run, _ in conflicted]).statuses} if conflicted else {}
    for run, conflict in conflicted:
        meta = read_meta_quietly(run.run_dir)
        if meta is not None and meta.finished_at is not None:
            clear_conflict(run.run_dir)
            result.settled.append((run, Skip(SkipReason.COMPLETED, f"completed by {meta.user} (job {meta.job_id})")))
            continue
        if states[run].state is RunState.CANCELLED:  # stopped on purpose: it stays stopped until named again
            clear_conflict(run.run_dir)
            why = cancelled_on_purpose(meta, None) or "cancelled"
            result.settled.append((run, Skip(SkipReason.CANCELLED, f"{why}: not restarted; `prove-jobs submit SWEEP "
                                                                   f"{run.options}` trains it again")))
            continue
        to_submit.append((sweep_for(run, conflict.sweep), run))
    for sweep, sweep_runs in by_sweep(to_submit):
        outcome = submit(sweep, sweep_runs, executor=executor, skip_done=True)
        result.submitted += outcome.submitted
        for run, reason in outcome.skipped:
            clear_conflict(run.run_dir)
            result.settled.append((run, reason))
        # one query for the jobs already queued behind holders
        waiting = ask_or_none(queued_behind(r, h) for r, h in outcome.conflicts) if after_holder else None
        for run, holder in outcome.conflicts:
            queued = queue_after_holder(sweep, run, holder, waiting) if after_holder else None
            if queued is None:
                result.still_held.append((run, holder))
            else:
                result.queued_after.append((queued, holder))
    return result


def resubmit_until_free(runs: Sequence[Run], sweep_for: SweepFor, *, executor: str = "auto",
                        after_holder: bool = False, keep_trying: bool = False, poll_s: float = 60.0,
                        timeout_s: float | None = None,
                        on_round: Callable[[ResubmitResult, bool], None] = lambda result, last: None) -> ResubmitResult:
    """:func:`resubmit_lock_conflicts`, again every ``poll_s`` while runs are still held (``keep_trying``).

    ``on_round(result, last)`` sees every round's result; the last round's is returned.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        result = resubmit_lock_conflicts(runs, sweep_for, executor=executor, after_holder=after_holder)
        last = (not result.still_held or not keep_trying
                or (deadline is not None and time.monotonic() + poll_s > deadline))
        on_round(result, last)
        if last:
            return result
        time.sleep(poll_s)


def resubmit_failed(runs: Sequence[Run], sweep_for: SweepFor, *, executor: str = "auto",
                    force_diverged: bool = False) -> SubmitResult:
    """Submit again every run of ``runs`` that failed or ran out of time; it resumes from its last checkpoint.

    Cancelled runs are left alone: someone stopped them on purpose. A diverged run (prove_jobs.divergence)
    is skipped, with why and how to force it, unless ``force_diverged``.
    """
    from prove_jobs.divergence import is_diverged, resubmit_refusal
    from prove_jobs.status import collect_status

    ended = (RunState.FAILED, RunState.TIMEOUT)
    failed = [s for s in collect_status(runs).statuses if s.state in ended]
    result = SubmitResult()
    to_submit = []
    for s in failed:
        if s.meta is not None and s.meta.error and is_diverged(s.meta.error) and not force_diverged:
            result.skipped.append((s.run, Skip(SkipReason.DIVERGED, resubmit_refusal(s.meta.error, s.run.options))))
        else:
            to_submit.append((sweep_for(s.run, s.meta.sweep_file if s.meta else ""), s.run))
    for sweep, sweep_runs in by_sweep(to_submit):
        outcome = submit(sweep, sweep_runs, executor=executor, skip_done=True)
        result.submitted += outcome.submitted
        result.skipped += outcome.skipped
        result.conflicts += outcome.conflicts
    return result


def resubmit(runs: Sequence[Run], sweep_for: SweepFor, *, failed: bool = False, lock_conflicts: bool = False,
             executor: str = "auto", force_diverged: bool = False, after_holder: bool = False,
             keep_trying: bool = False, poll_s: float = 60.0, timeout_s: float | None = None,
             on_failed: Callable[[SubmitResult], None] = lambda result: None,
             on_round: Callable[[ResubmitResult, bool], None] = lambda result, last: None) -> ResubmitOutcome:
    """``resubmit``: with ``failed``, :func:`resubmit_failed` (``on_failed`` sees what it did), then with
    ``lock_conflicts`` :func:`resubmit_until_free` (``on_round`` sees each round)."""
    outcome = ResubmitOutcome()
    if failed:
        outcome.failed = resubmit_failed(runs, sweep_for, executor=executor, force_diverged=force_diverged)
        outcome.started += [s.run for s in outcome.failed.submitted]
        on_failed(outcome.failed)
    if lock_conflicts:
        def each(result: ResubmitResult, last: bool) -> None:
            outcome.started.extend(s.run for s in result.submitted)
            on_round(result, last)

        outcome.conflicts = resubmit_until_free(runs, sweep_for, executor=executor, after_holder=after_holder,
                                                keep_trying=keep_trying, poll_s=poll_s, timeout_s=timeout_s,
                                                on_round=each)
    return outcome
