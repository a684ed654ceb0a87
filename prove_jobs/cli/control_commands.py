"""``wait``, ``cancel``, ``unlock``: following and stopping submitted runs (prove_jobs.control)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from prove_jobs.cli.common import run_filter, sweep_and_runs
from prove_jobs.errors import ProveJobsError

TYPE_CHECKING = False  # not typing's: see parser.py
if TYPE_CHECKING:
    from pathlib import Path

    from prove_jobs.control import WaitOutcome
    from prove_jobs.runs import Run
    from prove_jobs.terminal import Terminal


def cmd_wait(args: argparse.Namespace, term: Terminal) -> int:
    _, runs = sweep_and_runs(args)
    return wait_and_show(runs, term, timeout_s=args.timeout, poll_s=args.poll, sweep_file=args.sweep)


def wait_and_show(runs: Sequence[Run], term: Terminal, *, timeout_s: float | None = None, poll_s: float = 2.0,
                  title: str | None = None, sweep_file: Path | None = None) -> int:
    """Block until the submitted ones of ``runs`` end, with a live line of where they stand; then one summary
    line (and, with ``title``, the status table); exit 1 unless all completed. Ctrl-C stops the waiting, not
    the jobs: it says so, and how to follow or stop them (exit 130)."""
    from prove_jobs.control import wait_for
    from prove_jobs.dashboard import waiting_line

    with term.progress() as progress:
        outcome = wait_for(runs, timeout_s=timeout_s, poll_s=poll_s, on_start=lambda o: term.info(o.start_line()),
                           on_poll=lambda statuses: progress(waiting_line(statuses)))
    if outcome.interrupted:
        sweep = str(sweep_file) if sweep_file is not None else "SWEEP"
        term.warn(f"interrupted: stopped waiting, but the {len(outcome.waited)} job(s) keep running; "
                  f"`prove-jobs wait {sweep}` follows them, `prove-jobs cancel {sweep}` stops them")
    for warning in outcome.warnings:
        term.warn(warning)
    if outcome.error is not None:
        raise outcome.error
    if outcome.interrupted:
        return 130
    return _show_ended(outcome, term, title) if outcome.waited else 0


def _show_ended(outcome: WaitOutcome, term: Terminal, title: str | None) -> int:
    if title is not None:
        from prove_jobs.dashboard import status_tables

        term.show(status_tables(outcome.statuses, title=title, width=term.out.width))
    if not outcome.unfinished:
        term.success(outcome.summary())
        return 0
    term.warn(outcome.summary())
    for status in outcome.unfinished:
        error = status.meta.error if status.meta else None
        detail = f": {error.splitlines()[0]}" if error else ""
        term.warn(f"{status.run.name} {status.state.value}{detail} (prove-jobs status {status.run.run_dir})")
    return 1


def cmd_cancel(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.control import cancel

    if args.root is not None:
        from prove_jobs.status_source import runs_to_show

        runs = run_filter(args).found(runs_to_show(args.sweep, root=args.root).runs)
    elif args.sweep is not None:
        runs = sweep_and_runs(args)[1]
    else:
        raise ProveJobsError("cancel: give a sweep file or --root DIR")
    result = cancel(runs)
    for run in result.cancelled:
        term.success(f"cancelled {run.name}")
    for run, why in result.refused:
        term.error(f"{run.name} not cancelled: {why}")
    if not result.cancelled and not result.refused:
        term.info("no live job to cancel")
    return 1 if result.refused else 0


def cmd_unlock(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.control import unlock_runs

    outcomes = unlock_runs(args.run_dirs, force=args.force)
    for outcome in outcomes:
        if outcome.released:
            term.success(f"{outcome.run_dir}: {outcome.what}")
        else:
            (term.warn if outcome.live and not args.stale else term.info)(f"{outcome.run_dir}: {outcome.what}")
    return 1 if not args.stale and any(outcome.live for outcome in outcomes) else 0
