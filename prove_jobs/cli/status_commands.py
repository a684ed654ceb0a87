"""``status`` and ``report``: where runs stand (prove_jobs.status_source, .dashboard, .report)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from prove_jobs.cli.common import close, run_filter, sweep_and_runs
from prove_jobs.errors import ProveJobsError

TYPE_CHECKING = False  # not typing's: see parser.py
if TYPE_CHECKING:
    from prove_jobs.status import RunStatus
    from prove_jobs.status_source import Selection, StatusSource
    from prove_jobs.terminal import Terminal


def cmd_status(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.status_source import StatusSource, narrowed, runs_to_show

    only = run_filter(args)
    chosen = narrowed(runs_to_show(args.sweep, root=args.root, data_root=args.data_root, only=only), only)
    for warning in chosen.warnings:
        term.warn(warning)
    source = StatusSource(chosen.runs, scope=chosen.scope, complete=chosen.complete, accounting=args.watch is None,
                          scheduler_every=args.scheduler_every if args.watch is not None else None,
                          listings=chosen.listings)
    try:
        if args.watch is not None:
            return _watch(source, chosen, args, term)
        statuses, warnings = source.collect(_wanted(args))
    finally:
        close(source, term)
    if args.json:
        term.json([s.to_json(finite=False) for s in statuses], finite=True)
        for warning in warnings:  # stderr: the JSON on stdout stays one document; each is in its run's "notes"
            term.warn(warning)
        return 0
    _show_statuses(statuses, warnings, source, chosen.title, args, term)
    return 0


def _wanted(args: argparse.Namespace) -> Callable[[RunStatus], bool]:
    """The statuses asked for: ``--model``/``--variant``/``--seed`` (the seed it trained with), ``--state``,
    ``--user``."""
    only, states, users = run_filter(args), args.state, args.user
    return lambda s: (only.matches(s.run, seed=s.seed) and (not states or s.state.key in states)
                      and (not users or s.user in users))


def _watch(source: StatusSource, chosen: Selection, args: argparse.Namespace, term: Terminal) -> int:
    from functools import partial

    from prove_jobs.dashboard import watch, watch_json

    collect = partial(source.collect, _wanted(args))
    if args.json:
        return watch_json(collect, args.watch, term.json_line)
    return watch(collect, chosen.title, args.watch, term.out, term.show, source.scheduler_caption)


def _show_statuses(statuses: list[RunStatus], warnings: list[str], source: StatusSource, title: str,
                   args: argparse.Namespace, term: Terminal) -> None:
    """The table (or ``--curve``'s curves); for one run dir, its starts and why it stopped; then the warnings."""
    one_run = args.sweep is not None and args.sweep.is_dir()
    if args.curve:
        from prove_jobs.dashboard import curve_table

        _draw_curves(source.with_other_variants(statuses) if one_run else statuses, term)
        for status in statuses:
            term.show(curve_table(status))
    else:
        from prove_jobs.dashboard import status_tables

        term.show(status_tables(statuses, title=title, width=term.out.width))
    if one_run:
        for line in _one_run_lines(statuses, warnings):
            term.line(line)
    for warning in warnings:
        term.warn(warning)


def _one_run_lines(statuses: Sequence[RunStatus], warnings: list[str]) -> list[str]:
    """A run's starts, how it used what it asked for, and why it stopped."""
    from prove_jobs.logs.lineage import lineage_lines
    from prove_jobs.states import RunState
    from prove_jobs.status_source import failure_details
    from prove_jobs.usage import usage_lines

    lines = []
    for status in statuses:
        live = status.state in (RunState.RUNNING, RunState.STARTING)
        lines += [*lineage_lines(status.log.lineage if status.log else (), live=live),
                  *usage_lines(status, warnings), *failure_details(status)]
    return lines


def _draw_curves(statuses: Sequence[RunStatus], term: Terminal) -> None:
    """Each model's variants overlaid in the terminal; without plotext (the report extra) just say how to get it."""
    from prove_jobs.report.terminal_curves import model_curves

    try:
        term.curves(lambda width, colour: model_curves(statuses, width=width, colour=colour))
    except ProveJobsError as exc:
        term.info(f"{exc}: the tables below have the numbers")


def cmd_report(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.report.make import make_report

    if args.root is not None:
        sweep, chosen = None, _runs_under_root(args, term)
        runs, listings = chosen.runs, chosen.listings
    elif args.sweep is not None:
        (sweep, runs), listings = sweep_and_runs(args), {}
    else:
        raise ProveJobsError("report: give a sweep file or --root DIR")
    made = make_report(sweep, runs, reference=args.reference, fmt=args.format, plots_dir=args.plots, out=args.out,
                       root=args.root, listings=listings)
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


def _runs_under_root(args: argparse.Namespace, term: Terminal) -> Selection:
    from prove_jobs.status_source import runs_to_show

    chosen = runs_to_show(args.sweep, root=args.root)
    if not chosen.runs:
        raise ProveJobsError(chosen.warnings[-1])  # "no runs under ...": after any folder left out
    for warning in chosen.warnings:  # folders left out (a seed01/ is no run of seed 1)
        term.warn(warning)
    runs = run_filter(args).found(chosen.runs)
    if not runs:
        raise ProveJobsError(f"no run under {args.root} is of the --model/--variant/--seed asked for")
    return replace(chosen, runs=runs)
