"""What a status command looks at: which runs (a sweep's, one run dir, all under a root), their statuses
read again and again through the log cache (``--watch``, ``wait``), and why a run that ended failed.

The CLI's half of status; :mod:`prove_jobs.status` computes each run's state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from prove_jobs.errors import ProveJobsError
from prove_jobs.hold import held_lines
from prove_jobs.job_logs import tail_lines
from prove_jobs.listing import Listings
from prove_jobs.metadata import Stage
from prove_jobs.run_filter import RunFilter
from prove_jobs.runs import CONFIG_DIR, JOB_STDERR, Run
from prove_jobs.states import RunState
from prove_jobs.status import RunStatus, collect_status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.spec import Sweep


def failure_details(status: RunStatus, lines: int = 12) -> list[str]:
    """Why a run ended without finishing: the recorded error, then the end of its job's stderr."""
    if status.state not in (RunState.FAILED, RunState.TIMEOUT, RunState.CANCELLED):
        return []
    details = []
    meta = status.meta
    lifecycle = meta.lifecycle if meta is not None else None
    if status.state is RunState.CANCELLED and lifecycle is not None and lifecycle.stage is Stage.CANCELLED:
        # the job's stderr then ends in the KeyboardInterrupt or SIGTERM the cancel sent: not why it stopped
        import time

        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lifecycle.at))
        at = f" at iteration {status.iter}" if status.iter is not None else ""
        return [f"cancelled by {lifecycle.by or '?'} on {when}{at} (`prove-jobs cancel`); it stays cancelled "
                f"until submitted by name ({status.run.options})"]
    if meta is not None and meta.error:
        details.append(f"error: {meta.error}")
    err = status.run.run_dir / CONFIG_DIR / JOB_STDERR
    try:
        tail = tail_lines(err, lines, below=status.run.run_dir)
    except ProveJobsError as exc:  # a FIFO, a device, a link on the way: said, never waited on
        return [*details, str(exc)]
    if tail:
        details.append(f"last {len(tail)} lines of {err} (job {status.job_id}):")
        details += [f"  {line}" for line in tail]
    return details



@dataclass(frozen=True)
class Selection:
    """The runs a command looks at, a title for them, and what to say about where they were looked for.

    ``scope``: the folder they are in (its log cache file is the one read); ``complete``: ``runs`` are
    every run under ``scope`` (a ``--root`` listing), so the cache can forget any other.
    """

    runs: list[Run]
    title: str
    warnings: list[str]
    scope: Path | None = None
    complete: bool = False
    listings: Listings = field(default_factory=dict)  # run dir -> its scandir, where --root listed it already


def runs_to_show(target: Path | None, *, root: Path | None = None, data_root: Path | None = None,
                 only: RunFilter | None = None) -> Selection:
    """The runs ``status`` (or ``report``) looks at: a sweep's, one run dir's, or all at any depth under ``root``."""
    if root is not None:
        from prove_jobs.discover import MAX_DEPTH, RUN_MARKS, discover_runs

        if target is not None:
            raise ProveJobsError(f"status: give a sweep file or --root DIR, not both ({target} and --root {root})")
        if not root.is_dir():
            raise ProveJobsError(f"{root}: no such folder (--root)")
        warnings: list[str] = []
        listings: Listings = {}
        runs = discover_runs(root.absolute(), warnings=warnings, listings=listings)
        warnings += [] if runs else [f"no runs under {root}: looked up to {MAX_DEPTH} levels deep for {RUN_MARKS} "
                                     "or *.log files"]
        return Selection(runs, f"Runs under {root}", warnings, root.absolute(), complete=True, listings=listings)
    if target is None:
        raise ProveJobsError("status: give a sweep file, a run dir, or --root DIR")
    if not target.exists() and target.suffix != ".toml":
        raise ProveJobsError(f"{target}: no such run dir or sweep file{_near(target)}")
    if target.is_dir():
        from prove_jobs.discover import RUN_MARKS, looks_like_run, run_at

        if not looks_like_run(target):
            raise ProveJobsError(f"{target}: not a run dir (none of {RUN_MARKS}, no *.log file); "
                                 f"did you mean --root {target}?")
        run = run_at(target)  # named as --root names it
        return Selection([run], str(run.run_dir), [], run.data_root)
    from prove_jobs.spec import load_sweep

    sweep = load_sweep(target, data_root=data_root)
    missing = missing_data_root(sweep)
    return Selection(sweep.select(only or RunFilter()), f"Sweep {sweep.name} ({sweep.data_root})",
                     [missing] if missing else [], sweep.data_root)


def narrowed(chosen: Selection, only: RunFilter) -> Selection:
    """A ``--root`` listing's runs of the models and variants asked for (their folders say), not every run
    below the root: the scheduler is asked about the view's own jobs only."""
    by_folder = only.by_folder()
    if not chosen.complete or by_folder == RunFilter():
        return chosen
    runs = by_folder.apply(chosen.runs)
    return replace(chosen, runs=runs, complete=len(runs) == len(chosen.runs))


def missing_data_root(sweep: Sweep) -> str | None:
    """A warning when the sweep's data root is not there: every run would read "not submitted"."""
    if sweep.data_root.is_dir():
        return None
    return (f"data root {sweep.data_root} does not exist: no run of this sweep was submitted there (is the "
            "variable in data_root set as when you submitted, and are you in the same folder if it is relative? "
            "--data-root DIR)")


def _near(path: Path) -> str:
    """``; did you mean demo_fcn_r18_tiny?``: a typo in the last part of a run dir's path."""
    import difflib

    try:
        names = [entry.name for entry in path.parent.iterdir()] if path.parent.is_dir() else []
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(str(path.parent / name) for name in close)}?)" if close else ""


class StatusSource:
    """The statuses of a set of runs, read through the log cache: each call parses only appended bytes.

    The cache file of the runs' folder (``scope``; by default their data roots' common folder) is
    loaded once; :meth:`close` saves it (quietly: the cache only saves time, so a read-only home or a
    full disk must not fail ``status``). ``complete``: ``runs`` are all there is under ``scope``.
    """

    def __init__(self, runs: Sequence[Run], cache_path: Path | None = None, *, scope: Path | None = None,
                 complete: bool = False, accounting: bool = False, scheduler_every: float | None = None,
                 listings: Listings | None = None) -> None:
        from prove_jobs.logs import LogCache, default_cache_path
        from prove_jobs.poll import PacedScheduler

        self.runs = list(runs)
        self.accounting = accounting  # sacct's GPU-hours: once per command, not per --watch refresh
        # --watch: squeue at most every scheduler_every seconds, its last answer in between (docs/cluster.md)
        self.scheduler = PacedScheduler(scheduler_every) if scheduler_every else None
        self.scope = scope if scope is not None else _common_folder(self.runs)
        self.complete = complete
        self.listings = listings  # --root's listing of each run dir: good for the first collect only
        self.cache_path = cache_path or default_cache_path(self.scope)
        self.logs = LogCache.load(self.cache_path) if self.runs else LogCache()
        self.logs.prefetch([run.run_dir for run in self.runs])  # a cold cache: parse on every core

    def collect(self, keep: Callable[[RunStatus], bool] = lambda status: True) -> tuple[list[RunStatus], list[str]]:
        """The statuses ``keep`` accepts, and the warnings to show with them."""
        from prove_jobs.logs.cache import gc_paused

        with gc_paused():
            report = collect_status(self.runs, read_log=self.logs.read_run_log, accounting=self.accounting,
                                    ask=self.scheduler.ask if self.scheduler else None, listings=self.listings)
        self.listings = None  # a --watch refresh lists afresh
        statuses = [s for s in report.statuses if keep(s)]
        warnings = [report.scheduler_note] if report.scheduler_note else []
        warnings += held_lines(statuses)  # a submission held after its first runs failed alike: one line
        warnings += [f"{s.run.name}: {note}" for s in statuses for note in s.notes]
        return statuses, warnings

    def scheduler_caption(self) -> str:
        """``scheduler asked 12 s ago (at most every 30 s)`` under a watch; "" otherwise."""
        return self.scheduler.caption() if self.scheduler else ""

    def with_other_variants(self, statuses: Sequence[RunStatus]) -> list[RunStatus]:
        """``statuses`` and those of the same models' runs in the data root's other variants (the same seed's
        for a run of several seeds): what ``status RUN_DIR --curve`` overlays."""
        from prove_jobs.discover import looks_like_run

        seen = {s.run.run_dir for s in statuses}
        others: list[Run] = []
        for run in (s.run for s in statuses if s.run.path is None):
            for variant in _subfolders(run.data_root):
                folder = run.data_root / variant / run.method / run.dataset / run.model
                folder = folder if run.seed is None else folder / f"seed{run.seed}"
                if folder not in seen and looks_like_run(folder):
                    seen.add(folder)
                    others.append(Run.from_dir(folder))
        extra = collect_status(others, read_log=self.logs.read_run_log).statuses if others else ()
        return sorted([*statuses, *extra], key=lambda s: (s.run.model, s.run.variant, s.run.seed or 0))

    def close(self) -> str | None:
        """Save the cache file; a warning (never an error) when it cannot be saved."""
        from prove_jobs.logs.cache_files import cache_dir, sweep_folder

        try:
            if self.complete and not self.runs:  # no run left under the scope: nothing to keep for it
                self.cache_path.unlink(missing_ok=True)
                return None
            if self.complete and self.scope is not None:
                self.logs.forget_unlisted(self.scope, [str(run.run_dir) for run in self.runs])
            if not self.logs.dirty:
                return None  # nothing was read: the file on disk says it all already
            self.logs.save(self.cache_path, scope=self.scope)
            if self.cache_path.parent == cache_dir():
                sweep_folder(self.cache_path)
        except OSError as exc:
            return (f"log cache {self.cache_path} not saved ({exc.strerror or exc}): the next status reads the logs "
                    "afresh")
        return None


def _common_folder(runs: Sequence[Run]) -> Path | None:
    """The folder of every run's data root: where a set of runs given without one (``wait``) is."""
    import os

    try:
        return Path(os.path.commonpath([str(run.data_root.absolute()) for run in runs])) if runs else None
    except ValueError:
        return None


def _subfolders(folder: Path) -> list[str]:
    """Names of the real folders in ``folder`` (no links: a link in a shared data root is anyone's to plant)."""
    import os

    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)
                      and not e.name.startswith("."))
    except OSError:
        return []
