"""What each ``prove-jobs`` command does: call one library function, print what it returned.

The commands on a sweep's spec are here; those of a family in its own module (``submit_commands``,
``control_commands``, ``status_commands``); ``HANDLERS`` names them all.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from prove_jobs.cli.common import sweep_and_runs
from prove_jobs.cli.control_commands import cmd_cancel, cmd_unlock, cmd_wait
from prove_jobs.cli.status_commands import cmd_report, cmd_status
from prove_jobs.cli.submit_commands import cmd_release, cmd_resubmit, cmd_submit, cmd_weights
from prove_jobs.errors import ProveJobsError

TYPE_CHECKING = False  # not typing's: see parser.py
if TYPE_CHECKING:
    from prove_jobs.terminal import Terminal


def cmd_plan(args: argparse.Namespace, term: Terminal) -> int:
    sweep, runs = sweep_and_runs(args, term)
    if args.json:
        from prove_jobs.plan import plan_rows

        term.json(plan_rows(sweep, runs))
    else:
        from prove_jobs.dashboard import plan_tables

        term.show(plan_tables(sweep, runs))
    return 0


def cmd_render(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.render import render_flat

    sweep, runs = sweep_and_runs(args, term)
    for path in render_flat(sweep, runs, args.out):
        term.info(f"wrote {path}")
    return 0


def cmd_departures(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.departures import departures
    from prove_jobs.departures_table import DeparturesTable, no_departure_line

    sweep, runs = sweep_and_runs(args, term)
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
