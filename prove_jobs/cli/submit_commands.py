"""``submit``, ``resubmit``, ``release``, ``weights``: queueing runs (prove_jobs.submit, .resubmit, .release)."""

from __future__ import annotations

import argparse

from prove_jobs.cli.common import report_conflicts, run_filter, sweep_and_runs, weight_line
from prove_jobs.cli.control_commands import wait_and_show
from prove_jobs.errors import ProveJobsError

TYPE_CHECKING = False  # not typing's: see parser.py
if TYPE_CHECKING:
    from prove_jobs.resubmit import ResubmitResult
    from prove_jobs.runs import Run
    from prove_jobs.spec import Sweep
    from prove_jobs.submit import SubmitResult
    from prove_jobs.terminal import Terminal


def cmd_submit(args: argparse.Namespace, term: Terminal) -> int:
    sweep, runs = sweep_and_runs(args)
    if args.smoke_partition and not args.smoke:
        raise ProveJobsError("submit: --smoke-partition goes with --smoke N")
    result = _smoke_then_submit(sweep, runs, args, term) if args.smoke else _submit(sweep, runs, args, term)
    if result is None:
        return 1
    _show_prepared(result, term)
    if args.dry_run:
        return _show_dry_run(result, term)
    held = _show_queued(result, term) or (bool(result.already_running) and not args.skip_done)
    if args.wait:
        mine = [s.run for s in result.submitted] + [run for run, _ in result.already_running]
        return (wait_and_show(mine, term, title=f"Sweep {sweep.name} ({sweep.data_root})", sweep_file=args.sweep)
                or (1 if held else 0))
    return 1 if held else 0


def _submit(sweep: Sweep, runs: list[Run], args: argparse.Namespace, term: Terminal) -> SubmitResult:
    from prove_jobs.submit import submit

    with term.transfer() as progress:
        return submit(sweep, runs, executor=args.executor, dry_run=args.dry_run, skip_done=args.skip_done,
                      named=args.model, progress=progress)


def _smoke_then_submit(sweep: Sweep, runs: list[Run], args: argparse.Namespace,
                       term: Terminal) -> SubmitResult | None:
    """``--smoke N``: the smoke tests, then, if all passed, the submission; ``None``: one failed."""
    from prove_jobs.smoke import smoke_then_submit

    with term.progress() as poll:  # one live line: the weights' bars would be a second live display
        smoke, result = smoke_then_submit(sweep, runs, args.smoke, partition=args.smoke_partition,
                                          executor=args.executor, dry_run=args.dry_run, skip_done=args.skip_done,
                                          named=args.model, on_poll=poll)
    for run in smoke.planned:
        term.info(f"would smoke-test {run.name} ({args.smoke} iterations and one validation)")
    for outcome in smoke.outcomes:
        (term.success if outcome.ok else term.error)(outcome.line())
    if result is None:
        term.error(f"{sum(not o.ok for o in smoke.outcomes)} smoke test(s) failed: nothing of the sweep submitted")
    return result


def _show_prepared(result: SubmitResult, term: Terminal) -> None:
    """What was said before anything was queued: warnings, checkpoints fetched, runs left alone."""
    for warning in result.warnings:
        term.warn(warning)
    for fetched in result.weights:
        if fetched.state in ("fetched", "would fetch", "missing"):
            term.info(weight_line(fetched))
    for run, skip in result.skipped:
        term.info(f"skipped {run.name}: {skip.short}")


def _show_dry_run(result: SubmitResult, term: Terminal) -> int:
    for s in result.submitted:
        term.info(f"would submit {s.run.name} -> {s.run.run_dir} (config {s.config_hash})")
    for script in result.scripts:
        term.line(script)
    for refusal in result.refusals:
        term.error(f"a real submit would refuse: {refusal}")
    return 1 if result.refusals else 0


def _show_queued(result: SubmitResult, term: Terminal) -> bool:
    """Each run queued, or already running; ``True`` if some met a lock conflict."""
    for s in result.submitted:
        term.success(f"submitted {s.run.name} as {s.executor} job {s.job_id}")
    for run, holder in result.already_running:
        term.info(f"{run.name}: already running as your {holder.executor} job {holder.job_id} on {holder.host}; "
                  "not submitted again")
    report_conflicts(result.conflicts, term)
    return bool(result.conflicts)


def cmd_resubmit(args: argparse.Namespace, term: Terminal) -> int:
    from functools import partial

    from prove_jobs.resubmit import resubmit, runs_to_resubmit

    _refuse_odd_resubmit(args)
    runs, sweep_for = runs_to_resubmit(args.sweep, root=args.root, data_root=args.data_root, only=run_filter(args))
    outcome = resubmit(runs, sweep_for, failed=args.failed, lock_conflicts=args.lock_conflicts,
                       executor=args.executor, force_diverged=args.force_diverged, after_holder=args.after_holder,
                       keep_trying=args.wait, poll_s=args.poll, timeout_s=args.timeout,
                       on_failed=partial(_show_failed, term=term), on_round=partial(_show_round, term=term,
                                                                                     poll_s=args.poll))
    code = 1 if outcome.held else 0
    if args.wait and outcome.started:  # as submit --wait: the resubmitted jobs, to their end
        return wait_and_show(outcome.started, term, timeout_s=args.timeout) or code
    return code


def _refuse_odd_resubmit(args: argparse.Namespace) -> None:
    if not (args.lock_conflicts or args.failed):
        raise ProveJobsError("resubmit: say which runs: --lock-conflicts, --failed, or both")
    if args.after_holder and not args.lock_conflicts:
        raise ProveJobsError("resubmit: --after-holder goes with --lock-conflicts")
    if args.force_diverged and not args.failed:
        raise ProveJobsError("resubmit: --force-diverged goes with --failed")


def _show_failed(failed: SubmitResult, *, term: Terminal) -> None:
    for s in failed.submitted:
        term.success(f"resubmitted {s.run.name} as {s.executor} job {s.job_id}")
    report_conflicts(failed.conflicts, term)
    for run, skip in failed.skipped:
        term.info(f"skipped {run.name}: {skip.detail}")
    if not failed.submitted and not failed.conflicts and not failed.skipped:
        term.info("no failed runs to resubmit")


def _show_round(result: ResubmitResult, last: bool, *, term: Terminal, poll_s: float) -> None:
    for s in result.submitted:
        term.success(f"resubmitted {s.run.name} as {s.executor} job {s.job_id}")
    for s, holder in result.queued_after:
        term.success(f"queued {s.run.name} as slurm job {s.job_id}: starts when {holder.user}'s job "
                     f"{holder.job_id} ends (and exits at once if that job completed it)")
    for run, skip in result.settled:
        term.info(f"{run.name}: {skip.detail}; nothing to do")
    if not result.still_held and not (result.submitted or result.settled or result.queued_after):
        term.info("no lock conflicts to resubmit")
    elif last:
        for run, holder in result.still_held:
            term.warn(f"still held: {run.name} by {holder.describe()}")
    elif result.still_held:
        term.info(f"{len(result.still_held)} run(s) still held; next try in {poll_s:g} s")


def cmd_release(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.release import release_held

    sweep, runs = sweep_and_runs(args)
    result = release_held(sweep, runs)
    if not result.arrays:
        term.info("no held task in this sweep: nothing to release")
        return 0
    for job_id, run in result.released:
        term.success(f"released {run.name} (job {job_id}): its config is unchanged; it keeps its place in the queue")
    for job_id, run in result.cancelled:
        term.info(f"cancelled {run.name} (job {job_id}): its config changed since it was queued; submitted anew")
    for s in result.submitted.submitted:
        term.success(f"submitted {s.run.name} as {s.executor} job {s.job_id} (config {s.config_hash})")
    for run, skip in result.submitted.skipped:
        term.info(f"skipped {run.name}: {skip.detail}")
    report_conflicts(result.submitted.conflicts, term)
    for refusal in result.refused:
        term.error(refusal)
    code = 1 if result.refused or result.submitted.conflicts else 0
    if args.wait and result.runs:
        return wait_and_show(result.runs, term, sweep_file=args.sweep) or code
    return code


def cmd_weights(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.preflight import fetch_weights

    sweep, runs = sweep_and_runs(args)
    with term.transfer() as progress:
        fetched = fetch_weights(sweep, runs, dry_run=args.dry_run, progress=progress)
    for item in fetched:
        term.line(weight_line(item))
    if not args.dry_run and any(f.checkpoint is not None and not f.checkpoint.local for f in fetched):
        term.success(f"weight cache ready: {sweep.weights_cache}")
    return 0
