"""How long a run trained, from its logs: every start's JSON log, or its text log where the JSON is gone.

A run's status needs a few lines of each log (``sparse.py``); its training time needs every train
record, so every byte of the JSON log is scanned. That scan is one bytes regex per stretch of
plain train lines (``"time": X, "iter": N``: adjacent in the order mmengine writes a record's
keys) with the lines counted to prove no line was passed over; the few other lines (val records,
NaN losses: an upper-case letter, as in ``sparse.py``) are ``json.loads``-ed. A buffer that does not
fit (another key order, a torn line, a string for a number) is read line by line with
``json.loads``, which is what :func:`prove_jobs.report.training_seconds` always did.

The text log is read the same way (``Iter(train) [ N/M] ... time: X``), line by line through
``records.text_line`` when it does not fit. mmengine prints ``time`` with 4 decimals: a run
timed from its text logs differs from its JSON by at most 0.00005 s per iteration.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from prove_jobs.logs.layout import RunFiles, StartFiles, find_run_files, start_files
from prove_jobs.logs.runlog import RunLog
from prove_jobs.values import MAX_SECONDS
from prove_jobs.verbose import DEBUG, LOGS, say

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


@dataclass(frozen=True)
class TrainingTime:
    """A run's time spent training, from mmengine's per-iteration ``time`` in every start's train records.

    ``seconds``: per train record, its ``time`` (the mean seconds per iteration since the previous
    record) times the iterations since the previous record, summed; iterations repeated after a
    resume count once (the later start's records win). Queue waits, the gaps between requeues and
    validation are not in it. ``None``: no train record with a time.

    ``at_iter``: (iteration, training seconds up to it) at each validation of the run, in order:
    what it took to reach that point of the curve. Inside a logging interval the seconds are
    interpolated with the next record's ``time``. A validation that a later start's resume undid
    (at or after where that start began) is left out, as its records are.
    """

    seconds: float | None
    at_iter: tuple[tuple[int, float], ...] = ()

    def to_row(self) -> tuple[object, ...]:
        """Plain tuples for the cache file: two flat ones load faster than a pair per val."""
        return (self.seconds, tuple(it for it, _ in self.at_iter), tuple(s for _, s in self.at_iter))

    @classmethod
    def from_row(cls, row: Any) -> TrainingTime:
        seconds, iters, at = row
        if not (seconds is None or type(seconds) is float) or len(iters) != len(at):
            raise ValueError("bad training time")
        if not (set(map(type, iters)) <= {int} and set(map(type, at)) <= {float}):
            raise ValueError("bad training time")
        return cls(seconds, tuple(zip(iters, at, strict=True)))


NO_TIME = TrainingTime(None, ())


@dataclass
class StartTimes:
    """What one training start's log says: train records (iteration, seconds per iteration) and vals.

    ``vals``: per val record, its own iteration (JSON ``step``; None in a text log) and the latest
    train (or, in a text log, checkpoint) iteration before it.
    """

    iters: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    vals: list[tuple[int | None, int | None]] = field(default_factory=list)
    mark: int | None = None
    val_iters: list[int] = field(default_factory=list)  # the vals' training iterations, once resolved
    how: str = "line by line"  # which reader answered, for the -vv log

    def add_train(self, it: int, seconds: float) -> None:
        self.iters.append(it)
        self.times.append(seconds)

    def add_mark(self, it: int) -> None:
        self.mark = it if self.mark is None else max(self.mark, it)

    def add_many(self, iters: list[int], times: list[float]) -> None:
        self.iters += iters
        self.times += times
        self.add_mark(max(iters))


@functools.cache
def _patterns() -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """JSON train record, text train line: compiled on first use (a warm ``status`` never times a run)."""
    # at most 9 digits (values.MAX_ITERS): a longer number is no match, and its line is checked one by one
    return (re.compile(rb'"time": ([^,}\n]+), "iter": (\d{1,9})[,}]'),
            # greedy: the line's one "  time: " (data_time's is "_time: "); lazy was half as fast
            re.compile(rb"Iter\(train\) \[ *(\d{1,9})/\d+\][^\n]*  time: (\d{1,7}(?:\.\d+)?)\s"))


class _Unfit(Exception):
    """The buffer is not what the fast scan expects: read it line by line."""


def json_times(data: bytes, mark: int | None = None) -> StartTimes:
    """A ``scalars.json``'s train records and vals; a last line without its newline counts when it is whole.

    ``mark``: the latest train iteration before ``data`` (the windows before it of the same file).
    """
    end = data.rfind(b"\n") + 1
    try:
        got = _json_fast(data, end, mark)
    except (_Unfit, ValueError):  # ValueError: a "time" that is not a number
        got = json_times_by_line(data[:end], mark)
    tail = data[end:]
    if tail.strip().startswith(b"{"):
        _json_line(tail, got)
    return got


def _json_fast(data: bytes, end: int, mark: int | None = None) -> StartTimes:
    train, _ = _patterns()
    got = StartTimes(how="scan", mark=mark)
    # Val records (aAcc, mIoU, mAcc) and non-finite numbers (NaN, Infinity) have an upper-case A, I
    # or N; mmseg's train keys are lower case. Those few lines are parsed in full, in file order.
    special = {data.rfind(b"\n", 0, pos) + 1 for pos in _find_all(data, (b"A", b"I", b"N"), end)}
    lo, plain, with_loss = 0, 0, 0
    for s in [*sorted(special), end]:
        if s > lo:
            found = train.findall(data, lo, s)
            if len(found) != data.count(b"\n", lo, s):
                raise _Unfit  # a line that is neither a plain train record nor special
            if found:
                times, iters = zip(*found, strict=True)
                seconds = list(map(float, times))
                if not (math.isfinite(sum(seconds)) and min(seconds) >= 0 and max(seconds) <= MAX_SECONDS):
                    raise _Unfit  # records.LOG_FIELDS' range: checked line by line
                got.add_many(list(map(int, iters)), seconds)
                plain += len(found)
        if s < end:
            e = data.find(b"\n", s, end)
            with_loss += _json_line(data[s:e], got)
            lo = e + 1
    # A record counts when it has a "loss" (training_seconds' rule): so must every plain line matched.
    if data.count(b'"loss": ', 0, end) != plain + with_loss:
        raise _Unfit
    return got


def json_times_by_line(data: bytes, mark: int | None = None) -> StartTimes:
    """``json_times`` one record at a time: where the fast scan cannot tell, and what it is checked against."""
    got = StartTimes(mark=mark)
    for line in data.split(b"\n"):
        if line.strip():
            _json_line(line, got)
    return got


def _json_line(line: bytes, got: StartTimes) -> int:
    """Fold one JSON line in, as ``training_seconds`` and ``FileState.add`` read it; 1 if it has a "loss"."""
    from prove_jobs.logs.records import json_dict, json_record

    obj = json_dict(line)
    if obj is None:
        return 0  # a line being written, or garbage: the status parser warns about it
    rec = json_record(obj, False)  # its values checked: one out of range is left out (status warns)
    if "loss" in obj and "time" in obj and rec is not None and rec.kind == "train" and rec.time is not None:
        got.add_train(rec.iter, rec.time)  # type: ignore[arg-type]  # a train record always has its iteration
    if rec is not None and rec.kind == "train" and rec.iter is not None:
        got.add_mark(rec.iter)
    elif rec is not None and rec.kind == "val":
        got.vals.append((rec.iter, got.mark))
    return int("loss" in obj)


_VAL_TAGS = (b"mIoU: ", b"aAcc: ", b"mAcc: ")
_CKPT_TAG = b"Saving checkpoint at "


def text_times(data: bytes, mark: int | None = None) -> StartTimes:
    """A text log's train lines and vals (complete lines only: the last one may be being written)."""
    end = data.rfind(b"\n") + 1
    try:
        return _text_fast(data, end, mark)
    except (_Unfit, ValueError):
        return text_times_by_line(data[:end], mark)


def _text_fast(data: bytes, end: int, mark: int | None = None) -> StartTimes:
    from prove_jobs.logs.records import text_line

    _, train = _patterns()
    got = StartTimes(how="scan", mark=mark)
    vals = {data.rfind(b"\n", 0, pos) + 1 for pos in _find_all(data, _VAL_TAGS, end)}
    ckpts = []  # (where, iteration) of each "Saving checkpoint at N iterations": a val's iteration
    for pos in _find_all(data, (_CKPT_TAG,), end):
        s = data.rfind(b"\n", 0, pos) + 1
        rec = text_line(data[s : data.find(b"\n", pos, end)])[1]
        if rec is not None and rec.kind == "ckpt" and rec.iter is not None:
            ckpts.append((s, rec.iter))
    lo, plain, k = 0, 0, 0
    for s in [*sorted(vals), end]:
        found = train.findall(data, lo, s)
        if found:
            iters, times = zip(*found, strict=True)
            got.add_many(list(map(int, iters)), list(map(float, times)))
            plain += len(found)
        while k < len(ckpts) and ckpts[k][0] < s:
            got.add_mark(ckpts[k][1])
            k += 1
        if s < end:
            e = data.find(b"\n", s, end)
            rec = text_line(data[s:e])[1]
            if rec is not None and rec.kind == "val":
                got.vals.append((None, got.mark))
            lo = e + 1
    # Every train line matched (none without a time, or with one this pattern does not read), each with a loss.
    if not plain == data.count(b"Iter(train) [", 0, end) == data.count(b"  loss: ", 0, end):
        raise _Unfit
    return got


def _find_all(data: bytes, tags: Sequence[bytes], end: int) -> list[int]:
    """Where each tag occurs before ``end``, at most once a line."""
    found = []
    for tag in tags:
        pos = data.find(tag, 0, end)
        while pos >= 0:
            found.append(pos)
            pos = data.find(tag, data.find(b"\n", pos, end), end)
    return found


def text_times_by_line(data: bytes, mark: int | None = None) -> StartTimes:
    """``text_times`` one line at a time: where the fast scan cannot tell, and what it is checked against."""
    from prove_jobs.logs.records import parse_text_chunk

    got = StartTimes(mark=mark)
    for rec in parse_text_chunk(data).records:
        if rec.kind in ("train", "ckpt") and rec.iter is not None:
            if rec.kind == "train" and rec.time is not None and rec.loss is not None and math.isfinite(rec.time):
                got.add_train(rec.iter, rec.time)
            got.add_mark(rec.iter)
        elif rec.kind == "val":
            got.vals.append((None, got.mark))
    return got


def _needs_text_vals(got: StartTimes) -> bool:
    """Whether a JSON val's ``step`` may not be its iteration (``log_metric_by_epoch``): the text log says more."""
    return any(own is None or own <= 0 or (mark is not None and own < mark) for own, mark in got.vals)


def _resolve_vals(got: StartTimes, text: StartTimes | None) -> StartTimes:
    """Each val's training iteration: the largest of its ``step``, the train iteration before it and, when
    the text log has as many vals (or one more: written first), the text's train/checkpoint iteration
    before it (as ``assemble`` does for the curve)."""
    use_text = text is not None and len(text.vals) in (len(got.vals), len(got.vals) + 1)
    for k, (own, mark) in enumerate(got.vals):
        bounds = [b for b in (own, mark, text.vals[k][1] if text is not None and use_text else None) if b]
        if bounds:
            got.val_iters.append(max(bounds))
    return got


def _read(path: str, kind: str, parse: Callable[[bytes, int | None], StartTimes]) -> StartTimes:
    """``path`` parsed window by window (bounded memory, see :mod:`prove_jobs.safe_read`), the windows' records
    joined in file order; raises ``OSError`` (:class:`~prove_jobs.safe_read.NotReadable` is one) when unreadable."""
    from prove_jobs.logs.layout import run_dir_of
    from prove_jobs.logs.runlog import LIMITS
    from prove_jobs.safe_read import NotReadable, open_file, windows

    try:
        fd, st = open_file(path, below=run_dir_of(path))
    except NotReadable as exc:
        raise OSError(str(exc)) from None
    got = StartTimes()
    try:
        for window in windows(fd, 0, st.st_size, LIMITS.window_bytes):
            part = parse(window.data, got.mark)
            got.iters += part.iters
            got.times += part.times
            got.vals += part.vals
            got.mark, got.how = part.mark, part.how
    finally:
        os.close(fd)
    say(LOGS, DEBUG, "read %s: bytes 0-%d (%d), times: %s %s", path, st.st_size, st.st_size, kind, got.how)
    return got


def read_start(files: StartFiles) -> tuple[StartTimes | None, bool]:
    """One start's times, from its JSON log, else its text log; and whether every file needed could be read."""
    ok = True
    if files.json_path is not None and files.json_st is not None:
        try:
            got = _read(files.json_path, "json", json_times)
        except OSError:
            ok = False  # as when there is no JSON: the text log
        else:
            text = None
            if _needs_text_vals(got) and files.log_st is not None:
                try:
                    text = _read(files.log_path, "text (for the vals' iterations)", text_times)
                except OSError:
                    ok = False
            return _resolve_vals(got, text), ok
    if files.log_st is None:
        return None, ok
    try:
        return _resolve_vals(_read(files.log_path, "text", text_times), None), ok
    except OSError:
        return None, False


def merge(starts: Sequence[StartTimes]) -> TrainingTime:
    """The run's training time from its starts' records, in start order (training_seconds' arithmetic): the
    lineage's (``lineage.py``): a start's records from its first iteration on replace every earlier start's."""
    iters: list[int] = []  # the records that count, in order, once each: a start's list is one already
    times: list[float] = []
    vals: set[int] = set()
    for st in starts:
        if st.iters:
            # A resumed start repeats the iterations after its checkpoint: they count once, its own.
            resumed_at = min(st.iters)
            cut = bisect.bisect_left(iters, resumed_at)
            del iters[cut:], times[cut:]
            vals = {v for v in vals if v < resumed_at}
            if all(map(operator.lt, st.iters, itertools.islice(st.iters, 1, None))):
                iters += st.iters
                times += st.times
            else:  # out of order, or an iteration twice: the later record wins
                own = dict(zip(st.iters, st.times, strict=True))
                iters += sorted(own)
                times += [own[it] for it in iters[cut:]]
            vals.update(st.val_iters)  # a start that trained nothing (Runner.val()/test()): not training's vals
    if not iters:
        return NO_TIME
    # A record's `time` is the mean seconds per iteration since the previous record.
    steps = map(operator.sub, iters, [0, *iters[:-1]])
    cumulative = list(itertools.accumulate(map(operator.mul, times, steps)))
    at_iter = []
    for v in sorted(v for v in vals if v > 0):
        k = bisect.bisect_left(iters, v)
        if k == len(iters):  # after the last record: what was logged
            seconds = cumulative[-1]
        else:
            before, since = (cumulative[k - 1], iters[k - 1]) if k else (0.0, 0)
            seconds = before + times[k] * (v - since)
        at_iter.append((v, seconds))
    return TrainingTime(cumulative[-1], tuple(at_iter))


def read_training_time(work_dir: Path, files: RunFiles) -> tuple[TrainingTime, bool]:
    """The run's training time from its files, and whether every file could be read (worth keeping)."""
    plan = [f for name in files.starts[:-1] if (f := start_files(os.path.join(work_dir, name), name)) is not None]
    plan += [files.newest] if files.newest is not None else []
    starts, clean = [], True
    for f in plan:
        got, ok = read_start(f)
        clean = clean and ok
        if got is not None:
            starts.append(got)
    return merge(starts), clean


def training_time(work_dir: Path, entries: Sequence[os.DirEntry[str]] | None = None) -> TrainingTime:
    """The training time of the run in ``work_dir``, read afresh (:meth:`LogCache.training_time` keeps it)."""
    files = find_run_files(Path(work_dir), entries)
    return NO_TIME if isinstance(files, RunLog) else read_training_time(Path(work_dir), files)[0]
