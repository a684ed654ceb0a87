"""The ``prove-jobs`` command line: every command, its options, their help and an example.

Standard library only at import: ``prove-jobs --help`` loads argparse and little else.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from prove_jobs import __version__

# Not typing.TYPE_CHECKING: importing typing (and pathlib, with its urllib.parse) costs more than
# the rest of `prove-jobs --help`; mypy treats a constant of this name the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

EXAMPLES = {
    "plan": "prove-jobs plan job_templates/sweeps/cityscapes.toml --variant WEIGHTS_CITYSCAPES",
    "render": "prove-jobs render job_templates/sweeps/demo.toml --model demo_fcn_r18_tiny --out rendered/",
    "departures": "prove-jobs departures job_templates/sweeps/cityscapes.toml --model segformer_mit-b3 "
                  "--variant WEIGHTS_CITYSCAPES",
    "submit": "prove-jobs submit job_templates/sweeps/demo.toml --executor local --wait\n"
              "  prove-jobs submit job_templates/sweeps/cityscapes.toml --smoke 20 --smoke-partition debug",
    "wait": "prove-jobs wait job_templates/sweeps/demo.toml --timeout 600",
    "cancel": "prove-jobs cancel job_templates/sweeps/demo.toml --model demo_fcn_r18_tiny\n"
              "  prove-jobs cancel --root $AWARE_DATA_ROOT --variant WEIGHTS_CITYSCAPES",
    "status": "prove-jobs status job_templates/sweeps/demo.toml --watch 5\n"
              "  prove-jobs status --root $AWARE_DATA_ROOT --state running --json\n"
              "  prove-jobs status demo/runs/DEMO_REF/baseline/cityscapes/demo_fcn_r18_tiny --curve",
    "demo-data": "prove-jobs demo-data demo/data/cityscapes",
    "weights": "prove-jobs weights job_templates/sweeps/cityscapes.toml\n"
               "  prove-jobs weights job_templates/sweeps/cityscapes.toml --model segformer_mit-b3 --dry-run",
    "check-locks": "prove-jobs check-locks job_templates/sweeps/cityscapes.toml\n"
                   "  prove-jobs check-locks --root $AWARE_DATA_ROOT --partition gpu",
    "unlock": "prove-jobs unlock --stale $AWARE_DATA_ROOT/WEIGHTS_CITYSCAPES/baseline/cityscapes/hrnet_hr48",
    "report": "prove-jobs report job_templates/sweeps/cityscapes.toml --out report.md --plots plots/\n"
              "  prove-jobs report --root $AWARE_DATA_ROOT --terminal",
    "release": "prove-jobs release job_templates/sweeps/cityscapes.toml --wait",
    "resubmit": "prove-jobs resubmit job_templates/sweeps/cityscapes.toml --lock-conflicts --wait --poll 60\n"
                "  prove-jobs resubmit job_templates/sweeps/cityscapes.toml --failed",
}
EXECUTOR_CHOICES = ["auto", "slurm", "local"]


def _path(text: str) -> Path:
    from pathlib import Path

    return Path(text)


def _help_width() -> int:
    """``shutil.get_terminal_size().columns - 2``, as argparse's help formatter computes it, without
    importing shutil (with bz2, lzma and zlib: a twentieth of a ``status`` start-up): argparse makes
    a formatter for every argument it adds, to check its metavar."""
    import os

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(1).columns
        except (OSError, ValueError):
            columns = 0
    return (columns or 80) - 2


class _HelpFormatter(argparse.HelpFormatter):
    """A command's description wrapped to the terminal; its example (the epilog) kept line for line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, as every other prove-jobs error, with where to read more."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        make: Any = self.formatter_class  # each HelpFormatter takes width; typeshed's protocol only prog
        formatter: argparse.HelpFormatter = make(prog=self.prog, width=_help_width())
        return formatter

    command = ""  # the command a command line names: its help is where to read more, also for an unknown option

    def error(self, message: str) -> NoReturn:
        where = f"{self.prog} {self.command}" if self.command and " " not in self.prog else self.prog
        self.exit(2, f"{self.prog}: error: {message} (see `{where} --help`)\n")


def _iterations(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of iterations (1 or more)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``only``: that command alone (the one a command line names); ``""``: the
    commands' names and help without their options (``prove-jobs --help``, a misspelt command).

    Each argparse parser and argument formats and translates messages (gettext looks for
    catalogues on disk every time): building the nine commands not asked for is most of the
    start-up of a ``prove-jobs status``.
    """
    parser = _Parser(
        prog="prove-jobs",
        description="Run sweeps of mmsegmentation training jobs on SLURM (or locally) and see where every run stands.",
    )
    parser.command = only or ""
    parser.add_argument("--version", action="version", version=f"prove-jobs {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="print each scheduler command with its duration to stderr; -vv also each log file read")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add) in COMMANDS.items():
        if only and only != name:
            continue
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  epilog=f"example:\n  {EXAMPLES[name]}",
                                  formatter_class=_HelpFormatter)
        if only == "":
            continue
        sub.add_argument("-v", "--verbose", action="count", default=0, dest="verbose_here",
                         help="as `prove-jobs -v`: scheduler commands (-vv: log files read) on stderr")
        add(sub)
    return parser


def _sweep_args(sub: argparse.ArgumentParser, *, optional: bool = False, what: str = "sweep file (TOML)") -> None:
    sub.add_argument("sweep", type=_path, nargs="?" if optional else None, help=what)
    sub.add_argument("--model", action="append", default=[], help="only this model (repeatable)")
    sub.add_argument("--variant", action="append", default=[], help="only this variant (repeatable)")
    sub.add_argument("--seed", action="append", default=[], type=int, help="only this seed (repeatable)")
    sub.add_argument("--data-root", type=_path, help="override the sweep's data_root")


def _plan(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub)
    sub.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _render(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub)
    sub.add_argument("--out", type=_path, default="rendered", help="folder for <VARIANT>__<model>.py")


def _departures(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub)
    sub.add_argument("--json", action="store_true", help="print a JSON list (one object per run, its rows) instead")


def _submit(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub)
    sub.add_argument("--executor", default="auto", choices=EXECUTOR_CHOICES,
                     help="auto (default): slurm when a controller answers; else local, for sweeps that ask "
                          "for no GPUs only")
    sub.add_argument("--dry-run", action="store_true",
                     help="print what would be submitted and which checkpoints fetched; write and fetch nothing")
    sub.add_argument("--wait", action="store_true", help="block until the jobs end, then show status")
    sub.add_argument("--skip-done", action="store_true",
                     help="leave completed and live runs alone and submit the rest (default: refuse)")
    sub.add_argument("--smoke", type=_iterations, metavar="N",
                     help="first train each distinct (model, variant, resources) N iterations and one validation "
                          "(a scratch folder, no run touched); submit only if all pass (docs/cluster.md, \"Holds\")")
    sub.add_argument("--smoke-partition", metavar="PARTITION",
                     help="with --smoke: run the smoke tests there (a debug partition) instead of the sweep's")


def _release(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub)
    sub.add_argument("--wait", action="store_true", help="block until the released and resubmitted runs end")


def _wait(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub)
    sub.add_argument("--timeout", type=_seconds, default=None, help="give up after this many seconds (default: never)")
    sub.add_argument("--poll", type=_seconds, default=2.0, help="seconds between checks (default: %(default)g)")


def _cancel(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub, optional=True)
    sub.add_argument("--root", type=_path, help="the runs found under this folder instead of a sweep's (with "
                                                 "--model/--variant/--seed to pick some)")


def _status(sub: argparse.ArgumentParser) -> None:
    from prove_jobs.states import RunState

    _sweep_args(sub, optional=True, what="a sweep file (TOML), or one run dir")
    sub.add_argument("--root", type=_path, help="every run found at any depth below this folder, instead of a sweep")
    sub.add_argument("--json", action="store_true", help="print a JSON list instead of a table (docs/status.md)")
    sub.add_argument("--watch", type=_seconds, nargs="?", const=10.0, metavar="SECONDS",
                     help="redraw every SECONDS (default 10) until Ctrl-C; to a file or pipe: one frame "
                          "after the other; with --json: one JSON line per refresh")
    sub.add_argument("--scheduler-every", type=_seconds, default=30.0, metavar="SECONDS",
                     help="with --watch: ask squeue (and sacct) at most every SECONDS (default 30), showing its "
                          "last answer in between; the logs still say at once that a run finished or failed")
    sub.add_argument("--curve", action="store_true",
                     help="each model's mIoU curve drawn here (a run dir: with its other variants; plotext, the "
                          "report extra), and per run the table Iteration | mIoU | aAcc")
    states = [s.key for s in RunState]
    sub.add_argument("--state", action="append", default=[], type=str.lower, choices=states, metavar="STATE",
                     help=f"only runs in this state (repeatable): {', '.join(states)}")
    sub.add_argument("--user", action="append", default=[], help="only runs submitted by this user (repeatable)")


def _unlock(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("run_dirs", type=_path, nargs="+", metavar="RUN_DIR", help="run directories")
    sub.add_argument("--stale", action="store_true",
                     help="release stale claims only; list live ones, no error (without --stale: a live "
                          "claim is an error, exit 1)")
    sub.add_argument("--force", action="store_true",
                     help="also release a live claim whose job is not training (never one that is)")


def _resubmit(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub, optional=True)
    sub.add_argument("--root", type=_path, help="look for runs under this folder instead of a sweep "
                                                 "(each is submitted with the sweep recorded in it)")
    sub.add_argument("--lock-conflicts", action="store_true",
                     help="runs whose lock conflict has cleared (the holder's job ended)")
    sub.add_argument("--failed", action="store_true",
                     help="runs that failed or hit their time limit (after you fixed the cause)")
    sub.add_argument("--force-diverged", action="store_true",
                     help="with --failed: also runs whose loss diverged (NaN/inf), skipped otherwise")
    sub.add_argument("--after-holder", action="store_true",
                     help="with --lock-conflicts: queue runs still held by a SLURM job behind it "
                          "(--dependency=afterany); they start by themselves when it ends")
    sub.add_argument("--executor", default="auto", choices=EXECUTOR_CHOICES,
                     help="auto: slurm when a controller answers, else local (GPU sweeps: only slurm)")
    sub.add_argument("--wait", action="store_true",
                     help="keep trying until no conflict is left, then wait for the jobs to end")
    sub.add_argument("--poll", type=_seconds, default=60.0, help="seconds between tries (default: %(default)g)")
    sub.add_argument("--timeout", type=_seconds, default=None, help="give up after this many seconds (default: never)")


def _report(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub, optional=True)
    sub.add_argument("--root", type=_path, help="compare every run found below this folder instead of a sweep's "
                                                 "(variants and models from their paths, recipes as recorded)")
    sub.add_argument("--reference", help="the variant others are compared with (default: the sweep's first; with "
                                         "--root the one with the most iterations at the smallest batch)")
    sub.add_argument("--out", type=_path, help="write the report here (default: stdout)")
    sub.add_argument("--plots", type=_path,
                     help="write the mIoU-vs-iteration PNGs into this folder: one per variant, one per model")
    sub.add_argument("--terminal", action="store_true",
                     help="draw each model's mIoU curves (variants overlaid, seeds as a band) here instead of "
                          "printing the report (with --out it is still written); needs plotext (report extra)")
    sub.add_argument("--format", choices=["md", "json"], default="md",
                     help="md: the report as the group writes it (default); json: the same numbers as data")


def _weights(sub: argparse.ArgumentParser) -> None:
    _sweep_args(sub)
    sub.add_argument("--dry-run", action="store_true", help="list each checkpoint and whether it is cached; fetch "
                                                            "nothing")


def _check_locks(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("sweep", type=_path, nargs="?", help="sweep file (TOML): its data root, partition and Python")
    sub.add_argument("--root", type=_path, help="a data root to check instead of a sweep's")
    sub.add_argument("--data-root", type=_path, help="override the sweep's data_root")
    sub.add_argument("--partition", help="where the probe jobs run (default: the sweep's, else SLURM's default)")


def _demo_data(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("dir", type=_path, help="folder to write leftImg8bit/ and gtFine/ into")


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "plan": ("Show every run of a sweep with its training configuration.", _plan),
    "render": ("Write the full, flat mmengine config of runs (needs the train extra).", _render),
    "departures": ("List every key where a run's config departs from the model-zoo config it inherits (zoo value, "
                   "rendered value, and the layer that changed it: model template, variant, sweep or run "
                   "template). Needs the train extra; reads three configs per run and two per model (about half a "
                   "second a run): name the runs you want with --model/--variant.", _departures),
    "submit": ("Queue the runs of a sweep, one job array per resource set.", _submit),
    "wait": ("Block until the submitted runs of a sweep end.", _wait),
    "cancel": ("Cancel the live jobs of a sweep's runs; a run stays cancelled until submitted by name. Exit 1 if "
               "some job could not be cancelled (another user's, a local job on another host): the others still are.",
               _cancel),
    "status": ("Show where every run stands: state, progress, mIoU/aAcc, job (a sweep or one run dir).", _status),
    "unlock": ("Release the claim on run dirs whose job is gone (stale); touches nothing else. A live claim "
               "is left alone: reported (exit 1), or listed with --stale; --force releases it if nothing trains.",
               _unlock),
    "release": ("After you fixed the cause: release the tasks held because their submission's first runs failed "
                "alike (those whose config is unchanged in place; those whose template changed are cancelled and "
                "submitted again, rendered anew), and submit again the runs that failed.", _release),
    "resubmit": ("Submit again the runs that met a lock conflict (once the holder is gone) or that failed; "
                 "they resume from their last checkpoint.", _resubmit),
    "report": ("Write the comparison report (Markdown or JSON) of a sweep or of the runs under a folder, "
               "with plots; several seeds as mean ± std with intervals.", _report),
    "demo-data": ("Write a small deterministic synthetic Cityscapes-format dataset.", _demo_data),
    "check-locks": ("Check that file locks in the data root hold across nodes: the login side and jobs on two "
                    "nodes each take a lock the others must see (about a minute on an idle cluster). Records the "
                    "result in the root; submit refuses flock locks where they stop at the node. Exit 1 if they "
                    "do.", _check_locks),
    "weights": ("Fetch the pretrained checkpoints of a sweep's runs into the weight cache ahead of time (each once, "
                "verified by the hash its name carries), for jobs on nodes without internet.", _weights),
}

