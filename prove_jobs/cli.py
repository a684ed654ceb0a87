"""``prove-jobs``: a thin layer that parses arguments, calls one function and prints."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from prove_jobs import __version__
from prove_jobs.errors import ProveJobsError
from prove_jobs.locks import LockHolder
from prove_jobs.logs import LogCache
from prove_jobs.runs import Run
from prove_jobs.spec import Sweep, load_sweep
from prove_jobs.status import RunState, RunStatus
from prove_jobs.terminal import Terminal

EXAMPLES = {
    "plan": "prove-jobs plan job_templates/sweeps/cityscapes.toml --variant WEIGHTS_CITYSCAPES",
    "render": "prove-jobs render job_templates/sweeps/demo.toml --model demo_fcn_r18_tiny --out rendered/",
    "submit": "prove-jobs submit job_templates/sweeps/demo.toml --executor local --wait",
    "wait": "prove-jobs wait job_templates/sweeps/demo.toml --timeout 600",
    "cancel": "prove-jobs cancel job_templates/sweeps/demo.toml --model demo_fcn_r18_tiny",
    "status": "prove-jobs status job_templates/sweeps/demo.toml --watch 5\n"
              "  prove-jobs status --root $AWARE_DATA_ROOT --state running --json\n"
              "  prove-jobs status demo/runs/DEMO_REF/baseline/cityscapes/demo_fcn_r18_tiny --curve",
    "demo-data": "prove-jobs demo-data demo/data/cityscapes",
    "unlock": "prove-jobs unlock --stale $AWARE_DATA_ROOT/WEIGHTS_CITYSCAPES/baseline/cityscapes/hrnet_hr48",
    "report": "prove-jobs report job_templates/sweeps/cityscapes.toml --out report.md --plots plots/",
    "resubmit": "prove-jobs resubmit job_templates/sweeps/cityscapes.toml --lock-conflicts --wait --poll 60\n"
                "  prove-jobs resubmit job_templates/sweeps/cityscapes.toml --failed",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prove-jobs",
        description="Run sweeps of mmsegmentation training jobs on SLURM (or locally) and see where every run stands.",
    )
    parser.add_argument("--version", action="version", version=f"prove-jobs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    def sweep_args(sub: argparse.ArgumentParser, *, optional: bool = False) -> None:
        sub.add_argument("sweep", type=Path, nargs="?" if optional else None, help="sweep file (TOML)")
        sub.add_argument("--model", action="append", default=[], help="only this model (repeatable)")
        sub.add_argument("--variant", action="append", default=[], help="only this variant (repeatable)")
        sub.add_argument("--data-root", type=Path, help="override the sweep's data_root")

    plan = command("plan", "Show every run of a sweep with its training configuration.")
    sweep_args(plan)
    plan.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    render = command("render", "Write the full, flat mmengine config of runs (needs the train extra).")
    sweep_args(render)
    render.add_argument("--out", type=Path, default=Path("rendered"), help="folder for <VARIANT>__<model>.py")

    submit = command("submit", "Queue the runs of a sweep, one job array per resource set.")
    sweep_args(submit)
    submit.add_argument("--executor", default="auto", choices=["auto", "slurm", "local"],
                        help="auto: slurm when a controller answers, else local")
    submit.add_argument("--dry-run", action="store_true", help="print what would be submitted; write nothing")
    submit.add_argument("--wait", action="store_true", help="block until the jobs end, then show status")
    submit.add_argument("--skip-done", action="store_true",
                        help="leave completed and live runs alone and submit the rest (default: refuse)")

    wait = command("wait", "Block until the submitted runs of a sweep end.")
    sweep_args(wait)
    wait.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    wait.add_argument("--poll", type=float, default=2.0, help="seconds between checks")

    cancel = command("cancel", "Cancel the live jobs of a sweep's runs.")
    sweep_args(cancel)

    status = command("status", "Show where every run stands: state, progress, mIoU/aAcc, job (a sweep or one run dir).")
    sweep_args(status, optional=True)
    status.add_argument("--root", type=Path, help="show every run found under this data root instead")
    status.add_argument("--json", action="store_true", help="print a JSON list instead of a table (docs/status.md)")
    status.add_argument("--watch", type=float, nargs="?", const=10.0, metavar="SECONDS",
                        help="redraw every SECONDS (default 10) until Ctrl-C")
    status.add_argument("--curve", action="store_true", help="per-run table: Iteration | mIoU | aAcc")
    status.add_argument("--state", action="append", default=[], type=str.lower,
                        choices=[s.name.lower() for s in RunState], help="only runs in this state (repeatable)")
    status.add_argument("--user", action="append", default=[], help="only runs submitted by this user (repeatable)")

    unlock = command("unlock", "Release the claim on run dirs whose job is gone (stale); touches nothing else.")
    unlock.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories")
    unlock.add_argument("--stale", action="store_true", help="release stale claims only; list live ones, no error")
    unlock.add_argument("--force", action="store_true",
                        help="also release a live claim whose job is not training (never one that is)")

    resubmit = command("resubmit", "Submit again the runs that met a lock conflict (once the holder is gone) "
                                   "or that failed; they resume from their last checkpoint.")
    sweep_args(resubmit, optional=True)
    resubmit.add_argument("--root", type=Path, help="look for runs under this data root instead of a sweep")
    resubmit.add_argument("--lock-conflicts", action="store_true",
                          help="runs whose lock conflict has cleared (the holder's job ended)")
    resubmit.add_argument("--failed", action="store_true",
                          help="runs that failed or hit their time limit (after you fixed the cause)")
    resubmit.add_argument("--after-holder", action="store_true",
                          help="with --lock-conflicts: queue runs still held by a SLURM job behind it "
                               "(--dependency=afterany); they start by themselves when it ends")
    resubmit.add_argument("--executor", default="auto", choices=["auto", "slurm", "local"])
    resubmit.add_argument("--wait", action="store_true", help="keep trying until no conflict is left")
    resubmit.add_argument("--poll", type=float, default=60.0, help="seconds between tries with --wait")
    resubmit.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")

    report = command("report", "Write the comparison report (Markdown or JSON) of a sweep, with plots.")
    sweep_args(report)
    report.add_argument("--reference", help="the variant others are compared with (default: the sweep's first)")
    report.add_argument("--out", type=Path, help="write the report here (default: stdout)")
    report.add_argument("--plots", type=Path, help="write one mIoU-vs-iteration PNG per variant into this folder")
    report.add_argument("--format", choices=["md", "json"], default="md")

    demo = command("demo-data", "Write a small deterministic synthetic Cityscapes-format dataset.")
    demo.add_argument("dir", type=Path, help="folder to write leftImg8bit/ and gtFine/ into")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    term = Terminal()
    try:
        return int(HANDLERS[args.command](args, term) or 0)
    except ProveJobsError as exc:
        term.error(str(exc))
        return 2
    except KeyboardInterrupt:
        term.info("interrupted")
        return 130


def _sweep_and_runs(args: argparse.Namespace) -> tuple[Sweep, list[Run]]:
    sweep = load_sweep(args.sweep, data_root=args.data_root)
    return sweep, sweep.runs(args.model, args.variant)


def cmd_plan(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.dashboard import plan_rows, plan_tables

    sweep, runs = _sweep_and_runs(args)
    if args.json:
        term.json(plan_rows(sweep, runs))
    else:
        term.show(plan_tables(sweep, runs))
    return 0


def cmd_render(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.render import flatten, render_run
    from prove_jobs.runs import CONFIG_FILE, MODEL_FILE, atomic_write_text

    sweep, runs = _sweep_and_runs(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        rendered = render_run(sweep, run)
        with tempfile.TemporaryDirectory(prefix="prove-render-") as scratch:
            (Path(scratch) / MODEL_FILE).write_text(rendered.model_text)
            (Path(scratch) / CONFIG_FILE).write_text(rendered.config_text)
            flat = flatten(Path(scratch) / CONFIG_FILE)
        target = args.out / f"{run.variant}__{run.model}.py"
        atomic_write_text(target, flat)
        term.info(f"wrote {target}")
    return 0


def cmd_submit(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.spec import Resources
    from prove_jobs.submit import Submission, describe_command, submit

    sweep, runs = _sweep_and_runs(args)
    result = submit(sweep, runs, executor=args.executor, dry_run=args.dry_run, skip_done=args.skip_done)
    submissions = result.submitted
    for warning in result.warnings:
        term.warn(warning)
    for run, reason in result.skipped:
        term.info(f"skipped {run.name}: {reason.split(': ', 1)[-1]}")
    if args.dry_run:
        groups: dict[Resources, list[Submission]] = {}
        for s in submissions:
            groups.setdefault(s.resources, []).append(s)
        for resources, group in groups.items():
            for s in group:
                term.info(f"would submit {s.run.name} -> {s.run.run_dir} (config {s.config_hash})")
            command = describe_command(group[0].executor, sweep, resources, [s.run for s in group])
            term.info(f"  as: {command}")
        return 0
    for s in submissions:
        term.success(f"submitted {s.run.name} as {s.executor} job {s.job_id}")
    _report_conflicts(result.conflicts, term)
    if args.wait:
        code = _wait_and_show([s.run for s in submissions], term)
        return code or (1 if result.conflicts else 0)
    return 1 if result.conflicts else 0


def _report_conflicts(conflicts: Sequence[tuple[Run, LockHolder]], term: Terminal) -> None:
    for run, holder in conflicts:
        term.warn(f"lock conflict: {run.name} is held by {holder.describe()}; not submitted")
    if conflicts:
        term.info("`prove-jobs resubmit SWEEP --lock-conflicts [--wait]` submits them once their holder is gone")


def cmd_wait(args: argparse.Namespace, term: Terminal) -> int:
    _, runs = _sweep_and_runs(args)
    return _wait_and_show(runs, term, timeout_s=args.timeout, poll_s=args.poll)


def _wait_and_show(runs: Sequence[Run], term: Terminal, *, timeout_s: float | None = None,
                   poll_s: float = 2.0) -> int:
    """Block until the runs end; one summary line (the table is `status`'s job); exit 1 unless all completed."""
    from collections import Counter

    from prove_jobs.status import RunState, collect_status
    from prove_jobs.submit import wait

    term.info(f"waiting for {len(runs)} run(s)...")
    wait(runs, timeout_s=timeout_s, poll_s=poll_s)
    statuses = collect_status(runs).statuses
    counts = Counter(s.state.value for s in statuses)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    bad = [s for s in statuses if s.state is not RunState.COMPLETED]
    if not bad:
        term.success(f"{len(statuses)} run(s) ended: {summary}")
        return 0
    term.warn(f"{len(statuses)} run(s) ended: {summary}")
    for status in bad:
        error = status.meta.error if status.meta else None
        detail = f": {error}" if error else ""
        term.warn(f"{status.run.name} {status.state.value}{detail} (see {status.run.run_dir})")
    return 1


def cmd_cancel(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.submit import cancel

    _, runs = _sweep_and_runs(args)
    cancelled = cancel(runs)
    for run in cancelled:
        term.success(f"cancelled {run.name}")
    if not cancelled:
        term.info("no live job to cancel")
    return 0


def cmd_status(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.logs import LogCache, default_cache_path
    from prove_jobs.status import collect_status

    runs, title = _status_runs(args)
    # Offsets and summaries of every log read last time: this call parses only appended bytes.
    cache_path = default_cache_path()
    logs = LogCache.load(cache_path)

    logs.prefetch([run.run_dir for run in runs])  # a cold cache: parse on every core

    def collect() -> tuple[list[RunStatus], list[str]]:
        report = collect_status(runs, read_log=logs.read_run_log)
        statuses = [s for s in report.statuses if _wanted(s, args)]
        warnings = [report.scheduler_note] if report.scheduler_note else []
        warnings += [f"{s.run.name}: {note}" for s in statuses for note in s.notes]
        return statuses, warnings

    if args.watch is not None:
        code = _watch(collect, title, args.watch, term)
        _save_quietly(logs, cache_path)
        return code
    statuses, warnings = collect()
    _save_quietly(logs, cache_path)
    if args.json:
        term.json([s.to_json() for s in statuses])
        return 0
    if args.curve:
        from prove_jobs.dashboard import curve_table

        for status in statuses:
            term.show(curve_table(status))
    else:
        from prove_jobs.dashboard import status_tables

        term.show(status_tables(statuses, title=title, width=term.out.width))
    if args.sweep is not None and args.sweep.is_dir():  # one run asked for: say why it stopped
        from prove_jobs.status import failure_details

        for status in statuses:
            for line in failure_details(status):
                term.line(line)
    for warning in warnings:
        term.warn(warning)
    return 0


def _save_quietly(logs: LogCache, path: Path) -> None:
    """The cache only saves time: a read-only home or a full disk must not fail `status`."""
    with contextlib.suppress(OSError):
        logs.save(path)


def _status_runs(args: argparse.Namespace) -> tuple[list[Run], str]:
    """The runs `status` looks at: a sweep's, every run under --root, or the one run dir given."""
    from prove_jobs.status import discover_runs

    if args.root is not None:
        if not args.root.is_dir():
            raise ProveJobsError(f"{args.root}: no such data root")
        return discover_runs(args.root.absolute()), f"Runs under {args.root}"
    if args.sweep is None:
        raise ProveJobsError("status: give a sweep file, a run dir, or --root DIR")
    if args.sweep.is_dir():
        run_dir = args.sweep.absolute()
        if len(run_dir.parts) < 5:
            raise ProveJobsError(f"{args.sweep}: not a run dir (<root>/<VARIANT>/<method>/<dataset>/<model>)")
        variant, method, dataset, model = run_dir.parts[-4:]
        return [Run(model, variant, method, dataset, run_dir.parents[3])], str(run_dir)
    sweep, runs = _sweep_and_runs(args)
    return runs, f"Sweep {sweep.name} ({sweep.data_root})"


def _wanted(status: RunStatus, args: argparse.Namespace) -> bool:
    return ((not args.model or status.run.model in args.model)
            and (not args.variant or status.run.variant in args.variant)
            and (not args.state or status.state.name.lower() in args.state)
            and (not args.user or status.user in args.user))


def _watch(collect: Callable[[], tuple[list[RunStatus], list[str]]], title: str, every_s: float,
           term: Terminal) -> int:
    """Redraw in place every ``every_s`` seconds (rich Live) until Ctrl-C; logs are re-read incrementally."""
    import time

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from prove_jobs.dashboard import status_tables

    def frame() -> Group:
        statuses, warnings = collect()
        stamp = time.strftime("%H:%M:%S")
        footer = [Text(f"{stamp} · every {every_s:g} s · Ctrl-C to quit", style="dim")]
        footer += [Text(f"warning: {w}", style="yellow") for w in warnings[:5]]
        return Group(status_tables(statuses, title=title, width=term.out.width), *footer)

    try:
        with Live(frame(), console=term.out, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(every_s)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 0


def cmd_demo_data(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.demo_data import make_demo_dataset

    root = make_demo_dataset(args.dir)
    term.success(f"demo dataset ready in {root}")
    return 0


def cmd_unlock(args: argparse.Namespace, term: Terminal) -> int:
    from prove_jobs.locks import unlock

    refused = 0
    for run_dir in args.run_dirs:
        if not (run_dir / "prove_run.json").exists():
            raise ProveJobsError(f"{run_dir}: not a run dir submitted by prove-jobs (no prove_run.json)")
        released, what = unlock(run_dir, force=args.force)
        if released:
            term.success(f"{run_dir}: {what}")
        else:
            quiet = args.stale or what == "no claim"
            (term.info if quiet else term.warn)(f"{run_dir}: {what}")
            refused += not quiet
    return 1 if refused else 0


def cmd_resubmit(args: argparse.Namespace, term: Terminal) -> int:
    import time

    from prove_jobs.status import discover_runs
    from prove_jobs.submit import resubmit_failed, resubmit_lock_conflicts

    if not (args.lock_conflicts or args.failed):
        raise ProveJobsError("resubmit: say which runs: --lock-conflicts, --failed, or both")
    if args.after_holder and not args.lock_conflicts:
        raise ProveJobsError("resubmit: --after-holder goes with --lock-conflicts")
    if args.root is not None:
        runs = [r for r in discover_runs(args.root.absolute())
                if (not args.model or r.model in args.model) and (not args.variant or r.variant in args.variant)]
        sweeps: dict[str, Sweep] = {}

        def sweep_for(run: Run, recorded: str) -> Sweep:
            if not recorded:
                raise ProveJobsError(f"{run.run_dir}: no sweep file is recorded for this run; pass SWEEP")
            if recorded not in sweeps:
                sweeps[recorded] = load_sweep(Path(recorded), data_root=run.data_root)
            return sweeps[recorded]
    elif args.sweep is not None:
        sweep, runs = _sweep_and_runs(args)

        def sweep_for(run: Run, recorded: str) -> Sweep:
            return sweep
    else:
        raise ProveJobsError("resubmit: give a sweep file or --root DIR")

    if args.failed:
        failed = resubmit_failed(runs, sweep_for, executor=args.executor)
        for s in failed.submitted:
            term.success(f"resubmitted {s.run.name} as {s.executor} job {s.job_id}")
        _report_conflicts(failed.conflicts, term)
        if not failed.submitted and not failed.conflicts:
            term.info("no failed runs to resubmit")
        if not args.lock_conflicts:
            return 1 if failed.conflicts else 0

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        result = resubmit_lock_conflicts(runs, sweep_for, executor=args.executor, after_holder=args.after_holder)
        for s in result.submitted:
            term.success(f"resubmitted {s.run.name} as {s.executor} job {s.job_id}")
        for s, holder in result.queued_after:
            term.success(f"queued {s.run.name} as slurm job {s.job_id}: starts when {holder.user}'s job "
                         f"{holder.job_id} ends (and exits at once if that job completed it)")
        for run, why in result.settled:
            term.info(f"{run.name}: {why}; nothing to do")
        if not result.still_held:
            if not (result.submitted or result.settled or result.queued_after):
                term.info("no lock conflicts to resubmit")
            return 0
        if not args.wait or (deadline is not None and time.monotonic() + args.poll > deadline):
            for run, holder in result.still_held:
                term.warn(f"still held: {run.name} by {holder.describe()}")
            return 1
        term.info(f"{len(result.still_held)} run(s) still held; next try in {args.poll:g} s")
        time.sleep(args.poll)


def cmd_report(args: argparse.Namespace, term: Terminal) -> int:
    import json
    import os

    from prove_jobs.report import build_report, render_markdown, write_plots
    from prove_jobs.runs import atomic_write_text
    from prove_jobs.status import collect_status

    sweep, runs = _sweep_and_runs(args)
    status = collect_status(runs)
    if status.scheduler_note:
        term.warn(status.scheduler_note)
    report = build_report(sweep, status.statuses, reference=args.reference)
    plots: dict[str, str] = {}
    if args.plots is not None:
        base = args.out.parent if args.out is not None else Path.cwd()
        for variant, path in write_plots(report, args.plots).items():
            plots[variant] = os.path.relpath(path.absolute(), base.absolute())
            term.info(f"wrote {path}")
    if args.format == "json":
        text = json.dumps({**report.to_json(), "plots": plots}, indent=2) + "\n"
    else:
        text = render_markdown(report, plots=plots)
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
        term.success(f"wrote {args.out}")
    return 0


HANDLERS = {
    "plan": cmd_plan,
    "render": cmd_render,
    "submit": cmd_submit,
    "wait": cmd_wait,
    "cancel": cmd_cancel,
    "status": cmd_status,
    "demo-data": cmd_demo_data,
    "unlock": cmd_unlock,
    "resubmit": cmd_resubmit,
    "report": cmd_report,
}


if __name__ == "__main__":
    sys.exit(main())
