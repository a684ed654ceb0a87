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
from prove_jobs.logs.runlog import EMPTY, TAIL, RunLog, TrainPoint, ValPoint
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
    """One training start: its resolved val points and what its train records say."""

    vals: list[ValPoint] = field(default_factory=list)
    max_iters: int | None = None
    first_train_time: float | None = None
    last_time: float | None = None  # its text log's last timestamp (else its JSON's mtime): when it stopped
    unresolved_vals: int = 0
    first_iter: int | None = None  # where this start's training (re)began
    tail: list[TrainT] = field(default_factory=list)
    tail_complete: bool = True
    all_train: Callable[[], list[TrainT]] | None = None
    last_train: tuple[int, float | None, float | None, float | None, float | None, float | None] | None = None
    done_iter: int | None = None  # formats.done_iter: the end of the latest epoch its logs saw end


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
    if text_state is not None and text_state.first_train is not None:
        start.first_train_time = _stamp_to_unix(text_state.first_train[1], year)
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
        for point in formats.legacy_vals(vals_src, start.max_iters, every) if vals_src is not None else []:
            if point is not None:
                start.vals.append(point)
            else:
                start.unresolved_vals += 1
        return start
    if json_state is None:
        for point in formats.text_vals(text_state) if text_state is not None else []:
            if point is not None:
                start.vals.append(point)
            else:
                start.unresolved_vals += 1
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


def _wall_seconds(starts: Sequence[_Start]) -> float | None:
    """The wall time of the starts that produced the result, each from its first training record to its last line.

    From the newest start back, a start counts when some of its iterations are still in the result (it began
    below every later start); one that trained nothing (aborted, test-only) or whose every iteration a later
    start trained again (a restart from scratch) does not, nor do the gaps between starts. ``None`` when a
    counting start's times are not in its logs (no text log).
    """
    total = 0.0
    bound: int | None = None
    for st in reversed(starts):
        if st.first_iter is None:
            continue
        if bound is None or st.first_iter < bound:
            if st.first_train_time is None or st.last_time is None:
                return None
            total += max(0.0, st.last_time - st.first_train_time)
        bound = st.first_iter if bound is None else min(bound, st.first_iter)
    return total if bound is not None else None


def _merge(starts: list[_Start], n_starts: int, warnings: list[str], last_time: float | None) -> RunLog:
    curve: dict[int, ValPoint] = {}
    max_iters: int | None = None
    first_time: float | None = None
    for st in starts:  # in start order: a later start overwrites
        for point in st.vals:
            curve[point.iter] = point
        max_iters = st.max_iters or max_iters
        if first_time is None:
            first_time = st.first_train_time
    # A resumed start repeats the iterations after its checkpoint: its records replace them. So the
    # train records that count are, from the last start back, each start's below where every later
    # one began; the last TAIL of them give the speed.
    kept: list[TrainT] = []
    last_iter: int | None = None
    last_train = None
    bound: int | None = None
    for st in reversed(starts):
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
        bound = st.first_iter if bound is None else min(bound, st.first_iter)
        if len(kept) >= TAIL:
            break
    times = [t for _, t in kept[-TAIL:] if t is not None and math.isfinite(t)]
    seconds = sum(times) / len(times) if times else None
    return RunLog(
        wall_s=_wall_seconds(starts),
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
        fresh_start=bool(starts) and starts[-1].first_iter is None,
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
    legacy = _read_legacy(files, noting, warnings)
    plan = [f for name in files.starts[:-1] if (f := start_files(os.path.join(work_dir, name), name)) is not None]
    plan += [files.newest] if files.newest is not None else []
    starts, last_time, newest = _read_starts(plan, legacy, noting, sparse, warnings)
    log = replace(_merge(starts, len(legacy) + len(plan), warnings, last_time), rejected=noting.rejected())
    say(LOGS, DEBUG, "assembled %s from %d start(s)", work_dir, len(legacy) + len(plan))
    if files.newest is not None and plan and plan[-1] is files.newest:
        log = replace(log, **_newest_start(files.newest, *newest))
    elif legacy and not plan:
        log = replace(log, **_newest_legacy(legacy[-1]))
    trained = next((st for st in reversed(starts) if st.first_iter is not None), None)  # not a test-only start
    log = replace(log, **noting.formats(log, trained.vals if trained else [], trained.done_iter if trained else None))
    if not legacy and not plan and files.other_logs:
        log = replace(log, warnings=(*log.warnings, _unreadable(files.other_logs)))
    return log, not warnings  # a warning (a torn line) is worth a re-read


Legacy = tuple[str | None, "FileState | None", str | None, "FileState | None"]  # .log.json and .log, read


def _read_legacy(files: RunFiles, get: FileGetter, warnings: list[str]) -> list[Legacy]:
    """mmcv's (mmseg 0.x) starts: each one's ``<ts>.log.json`` and ``<ts>.log``, read (those that could be)."""
    read: list[Legacy] = []
    for _name, json_path, log_path in files.legacy_starts():
        json_state = get(json_path, "json0", warnings) if json_path else None
        text_state = get(log_path, "text", warnings) if log_path else None
        if json_state is not None or text_state is not None:
            read.append((json_path, json_state, log_path, text_state))
    return read


def _newest_legacy(newest: Legacy) -> dict[str, Any]:
    """The newest 0.x start's files: when they were last written, the text log to show."""
    json_path, json_state, log_path, text_state = newest
    mtimes = [state.mtime for state in (json_state, text_state) if state is not None]
    return {"last_write": max(mtimes) if mtimes else None,
            "log_path": log_path if text_state is not None else json_path,
            "torn": tuple(str(path) for path, state in ((json_path, json_state), (log_path, text_state))
                          if path is not None and state is not None and state.offset < state.size)}


def _unreadable(paths: Sequence[str]) -> str:
    """The note of a work dir whose only logs are in no shape prove-jobs reads."""
    from prove_jobs.logs.filestate import first_line

    shown = ", ".join(f"{os.path.basename(p)} ({first_line(p)})" for p in paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return (f"no log prove-jobs can read: {shown}{more}: no mmengine or mmcv (mmseg 0.x) log line, and no "
            "<timestamp>/ log folder, <timestamp>.log or .log.json beside them")


def _newest_start(files: StartFiles, json_state: FileState | None, text_state: FileState | None) -> dict[str, Any]:
    """What the newest start's files say beyond the records: a cut-off last line, when they were last written."""
    states = [(path, state) for path, state in ((files.json_path, json_state), (files.log_path, text_state))
              if path is not None and state is not None]
    mtimes = [st.st_mtime for st in (files.json_st, files.log_st) if st is not None]
    return {
        "torn": tuple(str(path) for path, state in states if state.offset < state.size),
        "last_write": max(mtimes) if mtimes else None,
        "log_path": files.log_path if files.log_st is not None else files.json_path,
    }


def _read_starts(plan: Sequence[StartFiles], legacy: Sequence[Legacy], get: FileGetter, sparse: bool,
                 warnings: list[str]) -> tuple[list[_Start], float | None, tuple[FileState | None, FileState | None]]:
    """Read each start's files (through ``get``: the cache, or afresh) and resolve its val iterations."""
    from prove_jobs.logs.filestate import read_all_train  # the parsing modules: only when a run changed

    starts: list[_Start] = []
    last_time: float | None = None
    json_state = text_state = None
    for json_path, json_state, log_path, text_state in legacy:  # mmcv's (mmseg 0.x): formats.py
        warnings.extend(json_state.warnings if json_state is not None else ())
        if text_state is not None:
            warnings.extend(w for w in text_state.warnings
                            if json_state is None or "binary" in w or w.startswith("unreadable: "))
        src = ((str(log_path), "text") if formats.train_from(json_state, text_state, True) is text_state
               else (str(json_path), "json0"))
        start = _build_start(json_state, text_state, None, legacy=True, all_train=partial(read_all_train, *src))
        start.last_time = _stamp_to_unix(text_state.last_stamp, None) if text_state is not None else None
        if start.last_time is None and json_state is not None:
            start.last_time = json_state.mtime
        if start.last_time is not None:
            last_time = start.last_time if last_time is None else max(last_time, start.last_time)
        if start.unresolved_vals:
            name = os.path.basename(str(json_path or log_path))
            warnings.append(f"{name}: {start.unresolved_vals} val record(s) without a training iteration skipped")
        starts.append(start)
    for files in plan:
        json_path = files.json_path if files.json_st is not None else None
        json_state = get(json_path, "json", warnings, files.json_st) if json_path else None
        json_path = json_path if json_state is not None else None
        text_state = None
        if files.log_st is not None:
            need_vals = json_state is None or not sparse or _needs_text_vals(json_state)
            text_state = get(files.log_path, "text" if need_vals else "texttail", warnings, files.log_st)
        stamp_time: float | None = None
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
        start.last_time = stamp_time
        if start.unresolved_vals:
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
    log = replace(_merge([start], n, warnings, last_time), rejected=noting.rejected())
    return replace(log, **noting.formats(log, start.vals, start.done_iter))


