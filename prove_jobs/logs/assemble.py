"""Putting a run together: its training starts, in order, into one :class:`RunLog`.

A resumed start repeats the iterations after its checkpoint; its records replace them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path

from prove_jobs.logs import formats
from prove_jobs.logs.layout import RunFiles, StartFiles, find_run_files, start_files
from prove_jobs.logs.lineage import Facts, bounds, classify, wall_seconds
from prove_jobs.logs.runlog import EMPTY, TAIL, RunLog, TrainPoint, ValPoint
from prove_jobs.logs.workfiles import Legacy, newest_legacy, newest_start, read_legacy, unreadable
from prove_jobs.verbose import DEBUG, LOGS, say

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from prove_jobs.logs.filestate import FileState, TrainT

    class FileGetter(Protocol):
        def __call__(
            self, path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None
        ) -> FileState | None: ...


@dataclass
class _Start:
    """One start: its resolved val points and what its train records say."""

    name: str = ""
    vals: list[ValPoint] = field(default_factory=list)
    max_iters: int | None = None
    first_train_time: float | None = None
    end_time: float | None = None  # its last training line's timestamp (train, checkpoint, val result)
    unresolved_vals: int = 0
    first_iter: int | None = None  # where this start's training (re)began
    resumed_from: int | None = None  # the checkpoint iteration its text log says it resumed from
    tested: bool = False  # a Runner.test() start (its <ts>.json of test metrics, or Iter(test) lines)
    tail: list[TrainT] = field(default_factory=list)
    tail_complete: bool = True
    all_train: Callable[[], list[TrainT]] | None = None
    last_train: tuple[int, float | None, float | None, float | None, float | None, float | None] | None = None
    done_iter: int | None = None  # formats.done_iter: the end of the latest epoch its logs saw end

    def take(self, points: Sequence[ValPoint | None]) -> None:
        """Its vals, each at its iteration (None: no iteration known, counted as unresolved)."""
        for point in points:
            if point is not None:
                self.vals.append(point)
            else:
                self.unresolved_vals += 1

    def facts(self) -> Facts:
        # no train record but metrics (Runner.test(), or Runner.val() of a checkpoint): test-only, not aborted
        tested = self.tested or (self.first_iter is None and bool(self.vals or self.unresolved_vals))
        step = formats.tail_step(self.tail)
        fresh = self.first_iter is not None and step is not None and self.first_iter <= step
        return Facts(self.name, self.first_iter, self.last_train[0] if self.last_train else None,
                     self.resumed_from, self.first_train_time, self.end_time, tested, fresh)


@lru_cache(maxsize=1 << 16)
def _stamp_to_unix(stamp: str | None, year: int | None) -> float | None:
    if stamp is None:
        return None
    try:
        if stamp.count("/") == 2:
            return time.mktime(time.strptime(stamp, "%Y/%m/%d %H:%M:%S"))
        if year is None:
            return None
        return time.mktime(time.strptime(f"{year}/{stamp}", "%Y/%m/%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def _needs_text_vals(json_state: FileState) -> bool:
    """Whether some JSON val's ``step`` may not be its iteration (then the text log can tell more)."""
    return any(own is None or own <= 0 or (mark is not None and own < mark)
               for own, _miou, _aacc, _macc, mark, _next, _epoch in json_state.vals)


def _build_start(
    json_state: FileState | None,
    text_state: FileState | None,
    year: int | None,
    legacy: bool = False,
    all_train: Callable[[], list[TrainT]] | None = None,
) -> _Start:
    start = _Start(all_train=all_train)
    start.max_iters = formats.planned_iters(json_state, text_state)  # (formats.py: the log formats' differences)
    if text_state is not None:
        if text_state.first_train is not None:
            start.first_train_time = _stamp_to_unix(text_state.first_train[1], year)
        start.end_time = _stamp_to_unix(text_state.work_stamp, year)
        start.resumed_from, start.tested = text_state.resumed_from, text_state.tested
    train_src = formats.train_from(json_state, text_state, legacy)
    start.done_iter = formats.done_iter(json_state, text_state)
    if train_src is not None:
        start.first_iter = train_src.first_train[0] if train_src.first_train is not None else None
        start.tail = train_src.tail
        start.tail_complete = train_src.tail_complete
        start.last_train = formats.with_text_memory(train_src.last_train, text_state)
    if legacy and train_src is not None:
        vals_src = text_state if train_src is text_state else json_state
        every = (json_state.eval_interval if json_state else None) or (text_state.eval_interval if text_state else None)
        start.take(formats.legacy_vals(vals_src, start.max_iters, every) if vals_src is not None else [])
        return start
    if json_state is None:
        start.take(formats.text_vals(text_state) if text_state is not None else [])
        return start
    text_vals = text_state.vals if text_state is not None and text_state.kind == "text" else []
    n = formats.per_epoch(json_state, text_state)
    # The text line of a val is written just before its JSON record: the k-th lines match when
    # the counts agree (or the text is one ahead).
    use_text = len(text_vals) in (len(json_state.vals), len(json_state.vals) + 1)
    for k, (own, miou, aacc, macc, last_train, _next, epoch) in enumerate(json_state.vals):
        # `step` is the iteration (log_metric_by_epoch=False) or an epoch count, which is never
        # larger than the iteration: the largest lower bound is the iteration.
        own = formats.json_val_iter(own, epoch, n)
        bounds = [b for b in (own, last_train, text_vals[k][4] if use_text else None) if b]
        if bounds:
            start.vals.append(ValPoint(max(bounds), miou, aacc, macc))
        else:
            start.unresolved_vals += 1
    return start


def _merge(starts: list[_Start], n_starts: int, warnings: list[str], last_time: float | None) -> RunLog:
    """The run from its starts (in start order, test-only and aborted ones too): the lineage (``lineage.py``)."""
    facts = [st.facts() for st in starts]
    lineage = classify(facts)
    below = bounds(facts)  # per start: from where later starts' records replace its own
    curve: dict[int, ValPoint] = {}
    max_iters: int | None = None
    first_time: float | None = None
    for st, bound, start in zip(starts, below, lineage, strict=True):  # in start order
        if st.first_iter is None:
            continue  # a test-only or aborted start: nothing of it is in the result
        for point in st.vals:  # a val at or after where a later start began is that start's (or undone)
            if bound is None or point.iter < bound:
                curve[point.iter] = point
        if start.counted:
            max_iters = st.max_iters or max_iters
        if first_time is None:
            first_time = st.first_train_time
    max_iters = max_iters or next((st.max_iters for st in reversed(starts) if st.max_iters), None)
    # A resumed start repeats the iterations after its checkpoint: its records replace them. So the
    # train records that count are, from the last start back, each start's below where every later
    # one began; the last TAIL of them give the speed.
    kept: list[TrainT] = []
    last_iter: int | None = None
    last_train = None
    for st, bound in zip(reversed(starts), reversed(below), strict=True):
        if st.first_iter is None:
            continue
        last_train = last_train or st.last_train
        recs = [r for r in st.tail if bound is None or r[0] < bound]
        if len(recs) < TAIL - len(kept) and not st.tail_complete and st.all_train is not None:
            recs = [r for r in st.all_train() if bound is None or r[0] < bound]
        by_iter = dict(recs)  # a repeated iteration: the later record
        if by_iter:
            if last_iter is None:
                last_iter = max(by_iter)
            kept = sorted(by_iter.items())[-(TAIL - len(kept)) :] + kept
        if len(kept) >= TAIL:
            break
    times = [t for _, t in kept[-TAIL:] if t is not None and math.isfinite(t)]
    seconds = sum(times) / len(times) if times else None
    trainers = [st for st, f in zip(starts, facts, strict=True) if not f.tested]
    return RunLog(
        wall_s=wall_seconds(lineage),
        lineage=lineage,
        last_iter=last_iter,
        max_iters=max_iters,
        curve=tuple(curve[i] for i in sorted(curve)),
        starts=n_starts,
        first_time=first_time,
        last_time=last_time,
        seconds_per_iter=seconds,
        warnings=tuple(warnings),
        last_train=TrainPoint(*last_train) if last_train else None,
        log_every=kept[-1][0] - kept[-2][0] if len(kept) >= 2 else None,
        fresh_start=bool(trainers) and trainers[-1].first_iter is None,
    )


def _year_hint(path: Path) -> int | None:
    try:
        return time.localtime(path.stat().st_mtime).tm_year
    except OSError:
        return None


def read_run_log_with(work_dir: Path, get: FileGetter, sparse: bool = True,
                      entries: Sequence[os.DirEntry[str]] | None = None) -> RunLog:
    """Put the run in ``work_dir`` together, reading its files through ``get`` (afresh, or the cache's)."""
    files = find_run_files(work_dir, entries)
    return files if isinstance(files, RunLog) else assemble(work_dir, files, get, sparse)[0]


def assemble(work_dir: Path, files: RunFiles, get: FileGetter, sparse: bool) -> tuple[RunLog, bool]:
    """The run's log from its files, and whether it is clean (no warning: worth keeping as it is)."""
    warnings: list[str] = []
    noting = _Noting(get)
    legacy = read_legacy(files, noting, warnings)
    # every <ts>/ folder in order; None: a Runner.test() folder (start_files), a test-only start
    plan = [(name, start_files(os.path.join(work_dir, name), name)) for name in files.starts[:-1]]
    plan += [(files.starts[-1], files.newest)] if files.starts else []
    n_starts = len(legacy) + sum(f is not None for _, f in plan)  # the training starts (test-only ones are not)
    starts, last_time, newest = _read_starts(plan, legacy, noting, sparse, warnings)
    log = replace(_merge(starts, n_starts, warnings, last_time), rejected=noting.rejected())
    say(LOGS, DEBUG, "assembled %s from %d start(s)", work_dir, n_starts)
    if files.newest is not None:
        log = replace(log, **newest_start(files.newest, *newest))
    elif legacy and not plan:
        log = replace(log, **newest_legacy(legacy[-1]))
    trained = next((st for st in reversed(starts) if st.first_iter is not None), None)  # not a test-only start
    log = replace(log, **noting.formats(log, trained.vals if trained else [], trained.done_iter if trained else None))
    if not legacy and not plan and files.other_logs:
        log = replace(log, warnings=(*log.warnings, unreadable(files.other_logs)))
    return log, not warnings  # a warning (a torn line) is worth a re-read


def _read_starts(plan: Sequence[tuple[str, StartFiles | None]], legacy: Sequence[Legacy],
                 get: FileGetter, sparse: bool, warnings: list[str],
                 ) -> tuple[list[_Start], float | None, tuple[FileState | None, FileState | None]]:
    """Read each start's files (through ``get``: the cache, or afresh) and resolve its val iterations."""
    from prove_jobs.logs.filestate import read_all_train  # the parsing modules: only when a run changed

    starts: list[_Start] = []
    last_time: float | None = None
    json_state = text_state = None
    for name, json_path, json_state, log_path, text_state in legacy:  # mmcv's (mmseg 0.x): formats.py
        warnings.extend(json_state.warnings if json_state is not None else ())
        if text_state is not None:
            warnings.extend(w for w in text_state.warnings
                            if json_state is None or "binary" in w or w.startswith("unreadable: "))
        src = ((str(log_path), "text") if formats.train_from(json_state, text_state, True) is text_state
               else (str(json_path), "json0"))
        start = _build_start(json_state, text_state, None, legacy=True, all_train=partial(read_all_train, *src))
        start.name = name
        stamp_time: float | None = _stamp_to_unix(text_state.last_stamp, None) if text_state is not None else None
        if stamp_time is None and json_state is not None:
            stamp_time = json_state.mtime
        if stamp_time is not None:
            last_time = stamp_time if last_time is None else max(last_time, stamp_time)
        if start.unresolved_vals and start.first_iter is not None:
            warnings.append(f"{name}: {start.unresolved_vals} val record(s) without a training iteration skipped")
        starts.append(start)
    for name, files in plan:
        if files is None:
            starts.append(_Start(name=name, tested=True))
            continue
        json_path = files.json_path if files.json_st is not None else None
        json_state = get(json_path, "json", warnings, files.json_st) if json_path else None
        json_path = json_path if json_state is not None else None
        text_state = None
        if files.log_st is not None:
            need_vals = json_state is None or not sparse or _needs_text_vals(json_state)
            text_state = get(files.log_path, "text" if need_vals else "texttail", warnings, files.log_st)
        stamp_time = None
        if json_state is not None:
            warnings.extend(json_state.warnings)
        if text_state is not None:
            if json_state is None:
                warnings.extend(text_state.warnings)
            else:  # the JSON is what counts; the text only for times and iterations
                warnings.extend(w for w in text_state.warnings if "binary" in w or w.startswith("unreadable: "))
            stamp_time = _stamp_to_unix(text_state.last_stamp, None)
        if stamp_time is None and json_state is not None:
            stamp_time = json_state.mtime  # no text log: when the JSON was last written
        if stamp_time is not None:
            last_time = stamp_time if last_time is None else max(last_time, stamp_time)
        src = (json_path, "json") if json_path is not None else (files.log_path, "text")
        start = _build_start(json_state, text_state, None, all_train=partial(read_all_train, *src))
        start.name = name
        if start.unresolved_vals and start.first_iter is not None:  # else a val-only start: not training's
            warnings.append(f"{files.name}: {start.unresolved_vals} val record(s) without a training iteration skipped")
        starts.append(start)
    return starts, last_time, (json_state, text_state)


class _Noting:
    """A file getter that also keeps, per field, why a value was left out of the files read (the newest file's)."""

    def __init__(self, get: FileGetter) -> None:
        self._get = get
        self._rejected: dict[str, str] = {}
        self._states: list[FileState] = []

    def __call__(self, path: Path | str, kind: str, warnings: list[str],
                 st: os.stat_result | None = None) -> FileState | None:
        state = self._get(path, kind, warnings, st)
        for name, why in state.rejected if state is not None else ():
            self._rejected[name] = f"{why} in {os.path.basename(path)}"
        if state is not None:
            self._states.append(state)
        return state

    def formats(self, log: RunLog, newest: Sequence[ValPoint], done: int | None) -> dict[str, Any]:
        """What the files read say of the loop (epochs) and the metric; the position at least the newest start's
        last val's (mmcv's, or an epoch loop's, whose train record of that iteration is not written)."""
        by_epoch = any(state.by_epoch for state in self._states)
        epochs = [state.epoch for state in self._states if state.epoch is not None]
        max_epochs = [state.max_epochs for state in self._states if state.max_epochs is not None]
        metrics = [state.metric or "mIoU" for state in self._states if state.has_metric_vals]
        last_iter = log.last_iter
        if newest and (last_iter is None or newest[-1].iter > last_iter):
            last_iter = newest[-1].iter
        if done is not None and last_iter is not None and done > last_iter:
            last_iter = done  # an epoch ended past its last train record (logged every k iterations)
        return {"by_epoch": by_epoch, "epoch": max(epochs) if by_epoch and epochs else None,
                "max_epochs": max_epochs[-1] if by_epoch and max_epochs else None,
                "metric": "mIoU" if "mIoU" in metrics or not metrics else metrics[-1], "last_iter": last_iter}

    def rejected(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._rejected.items())


def read_text_log_with(path: Path, get: FileGetter) -> RunLog:
    warnings: list[str] = []
    noting = _Noting(get)
    try:
        path.stat()
    except FileNotFoundError:
        return EMPTY
    except OSError:
        pass  # reported by the read below
    state = noting(path, "text", warnings)
    if state is None:
        return RunLog(None, None, (), 0, None, None, None, tuple(warnings))
    warnings.extend(state.warnings)
    year = _year_hint(path)
    from prove_jobs.logs.filestate import read_all_train

    all_train = partial(read_all_train, path, "text")
    start = _build_start(None, state, year, all_train=all_train)
    last_time = _stamp_to_unix(state.last_stamp, year)
    mtime = state.mtime
    # A console timestamp has no year: the file's mtime year, or the one before if that is in the future.
    if year is not None and last_time is not None and last_time > mtime + 86400:
        start = _build_start(None, state, year - 1, all_train=all_train)
        last_time = _stamp_to_unix(state.last_stamp, year - 1)
    n = 1 if state.first_stamp is not None else 0
    start.name = path.name
    log = replace(_merge([start] if n else [], n, warnings, last_time), rejected=noting.rejected())
    return replace(log, **noting.formats(log, start.vals, start.done_iter))


