"""What each ``prove-jobs`` command does: call one library function, print what it returned."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from prove_jobs.errors import ProveJobsError

TYPE_CHECKING = False  # not typing's: see parser.py
if TYPE_CHECKING:
    from pathlib import Path

    from prove_jobs.claims import LockHolder
    from prove_jobs.runs import Run
    from prove_jobs.spec import Sweep
    from prove_jobs.status import RunStatus
    from prove_jobs.status_source import StatusSource
    from prove_jobs.terminal import Terminal
    from prove_jobs.weight_cache import Fetched


def _sweep_and_runs(args: argparse.Namespace, term: Terminal | None = None) -> tuple[Sweep, list[Run]]:
    """The sweep and the runs asked for; with ``term``, a preview: an unset ``${VAR}`` is shown, not refused."""
    from prove_jobs.spec import load_sweep

    sweep = load_sweep(args.sweep, data_root=args.data_root, preview=term is not None)
    if term is not None and sweep.unset:
        names = ", ".join(sweep.unset)
        term.warn(f"{names} not set: paths are shown as ${{{sweep.unset[0]}}}/...; export {sweep.unset[0]}=/path "
                  "(or pass --data-root DIR) before you submit")
    return sweep, sweep.runs(args.model, args.variant, args.seed)


def cmd_plan(args: argparse.Namespace, term: Terminal) -> int:
    sweep, runs = _sweep_and_runs(args, term)
    if args.json:
        from prove_jobs.plan import plan_rows

        term.json(plan_rows(sweep, runs))
    else:
        from prove_jobs.dashboard import plan_tables

        term.show(plan_tables(sweep, runs))
    return 0


def cmd_render(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.render import render_flat

    sweep, runs = _sweep_and_runs(args, term)
    for path in render_flat(sweep, runs, args.out):
        term.info(f"wrote {path}")
    return 0


def cmd_departures(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.departures import departures
    from prove_jobs.departures_table import DeparturesTable, no_departure_line

    sweep, runs = _sweep_and_runs(args, term)
    results = departures(sweep, runs)
    if args.json:
        term.json([result.to_json() for result in results])
        return 0
    for result in results:
        if result.rows:
            term.show(DeparturesTable(result))
        else:
            term.line(no_departure_line(result))
    return 0


def cmd_submit(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.submit import submit

    sweep, runs = _sweep_and_runs(args)
    if args.smoke_partition and not args.smoke:
        raise ProveJobsError("submit: --smoke-partition goes with --smoke N")
    if args.smoke:
        from prove_jobs.smoke import smoke_then_submit

        with term.progress() as poll:  # one live line: the weights' bars would be a second live display
            smoke, maybe = smoke_then_submit(sweep, runs, args.smoke, partition=args.smoke_partition,
                                             executor=args.executor, dry_run=args.dry_run, skip_done=args.skip_done,
                                             named=args.model, on_poll=poll)
        for run in smoke.planned:
            term.info(f"would smoke-test {run.name} ({args.smoke} iterations and one validation)")
        for outcome in smoke.outcomes:
            (term.success if outcome.ok else term.error)(outcome.line())
        if maybe is None:
            failed = sum(not o.ok for o in smoke.outcomes)
            term.error(f"{failed} smoke test(s) failed: nothing of the sweep submitted")
            return 1
        result = maybe
    else:
        with term.transfer() as progress:
            result = submit(sweep, runs, executor=args.executor, dry_run=args.dry_run, skip_done=args.skip_done,
                            named=args.model, progress=progress)
    for warning in result.warnings:
        term.warn(warning)
    for fetched in result.weights:
        if fetched.state in ("fetched", "would fetch", "missing"):
            term.info(_weight_line(fetched))
    for run, reason in result.skipped:
        term.info(f"skipped {run.name}: {reason.split(': ', 1)[-1] if 'completed' in reason else reason}")
    if args.dry_run:
        for s in result.submitted:
            term.info(f"would submit {s.run.name} -> {s.run.run_dir} (config {s.config_hash})")
        for script in result.scripts:
            term.line(script)
        for refusal in result.refusals:
            term.error(f"a real submit would refuse: {refusal}")
        return 1 if result.refusals else 0
    for s in result.submitted:
        term.success(f"submitted {s.run.name} as {s.executor} job {s.job_id}")
    for run, holder in result.already_running:
        term.info(f"{run.name}: already running as your {holder.executor} job {holder.job_id} on {holder.host}; "
                  "not submitted again")
    _report_conflicts(result.conflicts, term)
    held = bool(result.conflicts) or (bool(result.already_running) and not args.skip_done)
    if args.wait:
        mine = [s.run for s in result.submitted] + [run for run, _ in result.already_running]
        return (_wait_and_show(mine, term, title=f"Sweep {sweep.name} ({sweep.data_root})", sweep_file=args.sweep)
                or (1 if held else 0))
    return 1 if held else 0


def _report_conflicts(conflicts: Sequence[tuple[Run, LockHolder]], term: Terminal) -> None:
    for run, holder in conflicts:
        term.warn(f"lock conflict: {run.name} is held by {holder.describe()}; not submitted")
    if conflicts:
        term.info("`prove-jobs resubmit SWEEP --lock-conflicts [--wait]` submits them once their holder is gone")


def cmd_wait(args: argparse.Namespace, term: Terminal) -> int:
    _, runs = _sweep_and_runs(args)
    return _wait_and_show(runs, term, timeout_s=args.timeout, poll_s=args.poll, sweep_file=args.sweep)


def _wait_and_show(runs: Sequence[Run], term: Terminal, *, timeout_s: float | None = None, poll_s: float = 2.0,
                   title: str | None = None, sweep_file: Path | None = None) -> int:
    """Block until the submitted ones of ``runs`` end, with a live line of where they stand; then one summary
    line (and, with ``title``, the status table); exit 1 unless all completed. Ctrl-C stops the waiting, not
    the jobs: it says so, and how to follow or stop them (exit 130)."""
    from collections import Counter

    from prove_jobs.control import wait
    from prove_jobs.dashboard import waiting_line
    from prove_jobs.runs import META_FILE
    from prove_jobs.states import RunState
    from prove_jobs.status_source import StatusSource

    waited = [run for run in runs if (run.run_dir / META_FILE).exists()]
    if not waited:
        term.info(f"nothing to wait for: none of these {len(runs)} run(s) has been submitted" if runs
                  else "nothing to wait for: no run was asked for")
        return 0
    term.info(f"waiting for {len(waited)} run(s)" + (f" ({len(runs) - len(waited)} never submitted)"
                                                     if len(waited) < len(runs) else "") + "...")
    source = StatusSource(waited)
    try:
        with term.progress() as progress:
            wait(waited, timeout_s=timeout_s, poll_s=poll_s,
                 on_poll=lambda: progress(waiting_line(source.collect()[0])))
        statuses, _ = source.collect()
    except KeyboardInterrupt:
        sweep = str(sweep_file) if sweep_file is not None else "SWEEP"
        term.warn(f"interrupted: stopped waiting, but the {len(waited)} job(s) keep running; "
                  f"`prove-jobs wait {sweep}` follows them, `prove-jobs cancel {sweep}` stops them")
        return 130
    finally:
        _close(source, term)
    if title is not None:
        from prove_jobs.dashboard import status_tables

        term.show(status_tables(statuses, title=title, width=term.out.width))
    counts = Counter(s.state.value for s in statuses)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    bad = [s for s in statuses if s.state is not RunState.COMPLETED]
    if not bad:
        term.success(f"{len(statuses)} run(s) ended: {summary}")
        return 0
    term.warn(f"{len(statuses)} run(s) ended: {summary}")
    for status in bad:
        error = status.meta.error if status.meta else None
        detail = f": {error.splitlines()[0]}" if error else ""
        term.warn(f"{status.run.name} {status.state.value}{detail} (prove-jobs status {status.run.run_dir})")
    return 1


def cmd_cancel(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.control import cancel

    if args.root is not None:
        from prove_jobs.status_source import runs_to_show

        runs = [run for run in runs_to_show(args.sweep, root=args.root).runs if _named(run, args)]
    elif args.sweep is not None:
        runs = _sweep_and_runs(args)[1]
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


def cmd_status(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.status_source import StatusSource, narrowed, runs_to_show

    chosen = narrowed(runs_to_show(args.sweep, root=args.root, data_root=args.data_root, models=args.model,
                                   variants=args.variant, seeds=args.seed), args.model, args.variant)
    for warning in chosen.warnings:
        term.warn(warning)
    source = StatusSource(chosen.runs, scope=chosen.scope, complete=chosen.complete, accounting=args.watch is None,
                          scheduler_every=args.scheduler_every if args.watch is not None else None)
    try:
        if args.watch is not None:
            from prove_jobs.dashboard import watch, watch_json

            def collect() -> tuple[list[RunStatus], list[str]]:
                return source.collect(lambda s: _wanted(s, args))

            if args.json:
                return watch_json(collect, args.watch, term.json_line)
            return watch(collect, chosen.title, args.watch, term.out, term.show, source.scheduler_caption)
        statuses, warnings = source.collect(lambda s: _wanted(s, args))
    finally:
        _close(source, term)
    if args.json:
        term.json([s.to_json(finite=False) for s in statuses], finite=True)
        for warning in warnings:  # stderr: the JSON on stdout stays one document; each is in its run's "notes"
            term.warn(warning)
        return 0
    if args.curve:
        from prove_jobs.dashboard import curve_table

        _draw_curves(source.with_other_variants(statuses) if args.sweep is not None and args.sweep.is_dir()
                     else statuses, term)
        for status in statuses:
            term.show(curve_table(status))
    else:
        from prove_jobs.dashboard import status_tables

        term.show(status_tables(statuses, title=chosen.title, width=term.out.width))
    if args.sweep is not None and args.sweep.is_dir():  # one run asked for: its starts, and why it stopped
        from prove_jobs.logs.lineage import lineage_lines
        from prove_jobs.states import RunState
        from prove_jobs.status_source import failure_details
        from prove_jobs.usage import usage_lines

        for status in statuses:
            live = status.state in (RunState.RUNNING, RunState.STARTING)
            for line in [*lineage_lines(status.log.lineage if status.log else (), live=live),
                         *usage_lines(status, warnings), *failure_details(status)]:
                term.line(line)
    for warning in warnings:
        term.warn(warning)
    return 0


def _draw_curves(statuses: Sequence[RunStatus], term: Terminal) -> None:
    """Each model's variants overlaid in the terminal; without plotext (the report extra) just say how to get it."""
    from prove_jobs.report.terminal_curves import model_curves

    try:
        term.curves(lambda width, colour: model_curves(statuses, width=width, colour=colour))
    except ProveJobsError as exc:
        term.info(f"{exc}: the tables below have the numbers")


def _named(run: Run, args: argparse.Namespace) -> bool:
    """Does a run found under --root match the --model/--variant/--seed given (none given: every run)?"""
    return ((not args.model or run.model in args.model) and (not args.variant or run.variant in args.variant)
            and (not args.seed or run.seed in args.seed))


def _wanted(status: RunStatus, args: argparse.Namespace) -> bool:
    return ((not args.model or status.run.model in args.model)
            and (not args.variant or status.run.variant in args.variant)
            and (not args.seed or status.seed in args.seed)
            and (not args.state or status.state.key in args.state)
            and (not args.user or status.user in args.user))


def cmd_weights(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.preflight import fetch_weights

    sweep, runs = _sweep_and_runs(args)
    with term.transfer() as progress:
        fetched = fetch_weights(sweep, runs, dry_run=args.dry_run, progress=progress)
    for item in fetched:
        term.line(_weight_line(item))
    if not args.dry_run and any(f.checkpoint is not None and not f.checkpoint.local for f in fetched):
        term.success(f"weight cache ready: {sweep.weights_cache}")
    return 0


def _weight_line(fetched: Fetched) -> str:
    """``https://.../mit_b3_20220624-13b1141c.pth -> /cache/mit_b3_20220624-13b1141c.pth (170.9 MB, fetched;
    segformer_mit-b3)``."""
    models = ", ".join(fetched.models)
    if fetched.checkpoint is None:
        return f"from scratch: {models}"
    from prove_jobs.terminal import byte_size

    size = "" if fetched.size is None else f"{byte_size(fetched.size)}, "
    source = fetched.checkpoint.url or fetched.checkpoint.source
    return f"{source} -> {fetched.checkpoint.path} ({size}{fetched.state}; {models})"


def cmd_demo_data(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.demo_data import make_demo_dataset

    if args.dir.exists() and not args.dir.is_dir():
        raise ProveJobsError(f"{args.dir}: is a file; demo-data writes a folder (leftImg8bit/, gtFine/) there")
    try:
        root = make_demo_dataset(args.dir)
    except OSError as exc:
        raise ProveJobsError(f"{exc.filename or args.dir}: cannot write the demo dataset "
                             f"({exc.strerror or exc})") from None
    term.success(f"demo dataset ready in {root}")
    return 0


def cmd_unlock(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.control import unlock_runs

    refused = 0
    for run_dir, released, what in unlock_runs(args.run_dirs, force=args.force):
        if released:
            term.success(f"{run_dir}: {what}")
        else:
            quiet = args.stale or what == "no claim"
            (term.info if quiet else term.warn)(f"{run_dir}: {what}")
            refused += not quiet
    return 1 if refused else 0


def cmd_resubmit(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.resubmit import (
        ResubmitResult,
        recorded_sweeps,
        resubmit_failed,
        resubmit_until_free,
        sweep_of,
    )

    if not (args.lock_conflicts or args.failed):
        raise ProveJobsError("resubmit: say which runs: --lock-conflicts, --failed, or both")
    if args.after_holder and not args.lock_conflicts:
        raise ProveJobsError("resubmit: --after-holder goes with --lock-conflicts")
    if args.force_diverged and not args.failed:
        raise ProveJobsError("resubmit: --force-diverged goes with --failed")
    if args.root is not None:
        from prove_jobs.discover import discover_runs

        runs = [r for r in discover_runs(args.root.absolute()) if _named(r, args)]
        sweep_for = recorded_sweeps()
    elif args.sweep is not None:
        sweep, runs = _sweep_and_runs(args)
        sweep_for = sweep_of(sweep)
    else:
        raise ProveJobsError("resubmit: give a sweep file or --root DIR")

    started: list[Run] = []  # the jobs --wait follows to their end
    if args.failed:
        failed = resubmit_failed(runs, sweep_for, executor=args.executor, force_diverged=args.force_diverged)
        started += [s.run for s in failed.submitted]
        for s in failed.submitted:
            term.success(f"resubmitted {s.run.name} as {s.executor} job {s.job_id}")
        _report_conflicts(failed.conflicts, term)
        for run, reason in failed.skipped:
            term.info(f"skipped {run.name}: {reason}")
        if not failed.submitted and not failed.conflicts and not failed.skipped:
            term.info("no failed runs to resubmit")
        if not args.lock_conflicts:
            code = 1 if failed.conflicts else 0
            return (_wait_and_show(started, term, timeout_s=args.timeout) or code) if args.wait and started else code

    def show(result: ResubmitResult, last: bool) -> None:
        started.extend(s.run for s in result.submitted)
        for s in result.submitted:
            term.success(f"resubmitted {s.run.name} as {s.executor} job {s.job_id}")
        for s, holder in result.queued_after:
            term.success(f"queued {s.run.name} as slurm job {s.job_id}: starts when {holder.user}'s job "
                         f"{holder.job_id} ends (and exits at once if that job completed it)")
        for run, why in result.settled:
            term.info(f"{run.name}: {why}; nothing to do")
        if not result.still_held and not (result.submitted or result.settled or result.queued_after):
            term.info("no lock conflicts to resubmit")
        elif last:
            for run, holder in result.still_held:
                term.warn(f"still held: {run.name} by {holder.describe()}")
        elif result.still_held:
            term.info(f"{len(result.still_held)} run(s) still held; next try in {args.poll:g} s")

    result = resubmit_until_free(runs, sweep_for, executor=args.executor, after_holder=args.after_holder,
                                 keep_trying=args.wait, poll_s=args.poll, timeout_s=args.timeout, on_round=show)
    code = 1 if result.still_held else 0
    if args.wait and started:  # as submit --wait: the resubmitted jobs, to their end
        return _wait_and_show(started, term, timeout_s=args.timeout) or code
    return code


def cmd_release(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.release import release_held

    sweep, runs = _sweep_and_runs(args)
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
    for run, reason in result.submitted.skipped:
        term.info(f"skipped {run.name}: {reason}")
    _report_conflicts(result.submitted.conflicts, term)
    for refusal in result.refused:
        term.error(refusal)
    code = 1 if result.refused or result.submitted.conflicts else 0
    if args.wait and result.runs:
        return _wait_and_show(result.runs, term, sweep_file=args.sweep) or code
    return code


def cmd_report(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.report.make import make_report

    if args.root is not None:
        from prove_jobs.status_source import runs_to_show

        chosen = runs_to_show(args.sweep, root=args.root)
        if not chosen.runs:
            raise ProveJobsError(chosen.warnings[-1])  # "no runs under ...": after any folder left out
        for warning in chosen.warnings:  # folders left out (a seed01/ is no run of seed 1)
            term.warn(warning)
        runs = [r for r in chosen.runs if _named(r, args)]
        sweep = None
    elif args.sweep is not None:
        sweep, runs = _sweep_and_runs(args)
    else:
        raise ProveJobsError("report: give a sweep file or --root DIR")
    made = make_report(sweep, runs, reference=args.reference, fmt=args.format, plots_dir=args.plots, out=args.out,
                       root=args.root)
    for warning in made.warnings:
        term.warn(warning)
    for path in made.plots:
        term.info(f"wrote {path}")
    if args.terminal:
        from prove_jobs.report.terminal_curves import model_curves

        term.curves(lambda width, colour: model_curves(made.statuses, width=width, colour=colour))
    elif args.out is None:
        sys.stdout.write(made.text)
    if args.out is not None:
        term.success(f"wrote {args.out}")
    return 0


def cmd_check_locks(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.lock_check import check_for

    check, root = check_for(args.sweep, root=args.root, partition=args.partition, data_root=args.data_root)
    (term.success if check.result == "global" else term.error)(check.line(root))
    return 0 if check.result == "global" else 1


HANDLERS: dict[str, Callable[[argparse.Namespace, Terminal], int]] = {
    "plan": cmd_plan,
    "render": cmd_render,
    "departures": cmd_departures,
    "submit": cmd_submit,
    "wait": cmd_wait,
    "cancel": cmd_cancel,
    "status": cmd_status,
    "demo-data": cmd_demo_data,
    "unlock": cmd_unlock,
    "resubmit": cmd_resubmit,
    "release": cmd_release,
    "report": cmd_report,
    "weights": cmd_weights,
    "check-locks": cmd_check_locks,
}


def _close(source: StatusSource, term: Terminal) -> None:
    warning = source.close()
    if warning:
        term.warn(warning)
