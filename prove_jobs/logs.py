"""Read where an mmsegmentation/mmengine training run stands from the logs in its work dir.

Stdlib only: this runs on login nodes without torch, mmengine or mmseg.

What mmengine 0.10 writes per training start, under ``<work_dir>/<YYYYMMDD_HHMMSS>/``:

* ``vis_data/scalars.json`` (and an identical ``vis_data/<ts>.json``): JSON lines. Train records
  carry ``iter``/``step`` (the training iteration), ``lr``, ``loss``, ``time``, ``data_time``...;
  val records carry ``aAcc``/``mIoU``/``mAcc`` (percent) and ``step``, which is the training
  iteration only with ``LoggerHook(log_metric_by_epoch=False)``, else the epoch count (0 with an
  InfiniteSampler).
* ``<ts>.log``: the text log, ``%Y/%m/%d %H:%M:%S - mmengine - INFO - Iter(train) [ 2500/20000]  ...``.
  The val line does not carry the training iteration.
* ``<ts>.json`` outside vis_data: written by ``Runner.test()``, never read here.

mmseg 0.x wrote ``<work_dir>/*.log.json`` (``"mode": "train"/"val"``, metrics as fractions).

Every file is parsed by a function that takes the bytes from an offset and returns the records and
the new offset, so :class:`LogCache` can re-read only what was appended.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import mmap
import os
import pickle
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol

__all__ = [
    "Chunk",
    "LogCache",
    "Record",
    "RunLog",
    "ValPoint",
    "default_cache_path",
    "parse_json_chunk",
    "parse_text_chunk",
    "read_run_log",
    "read_run_log_full",
    "read_text_log",
]


class ValPoint(NamedTuple):
    """One validation: the training iteration and its metrics (a tuple: 40,000 of them load in ms)."""

    iter: int
    miou: float | None  # percent
    aacc: float | None  # percent
    macc: float | None  # percent


@dataclass(frozen=True)
class RunLog:
    last_iter: int | None
    max_iters: int | None
    curve: tuple[ValPoint, ...]
    starts: int
    first_time: float | None
    last_time: float | None
    seconds_per_iter: float | None
    warnings: tuple[str, ...]


EMPTY = RunLog(None, None, (), 0, None, None, None, ())


@dataclass(frozen=True)
class Record:
    """One parsed log record, before val iterations are resolved.

    kind: "train", "val" or "ckpt" ("Saving checkpoint at N iterations").
    iter: train: the training iteration; ckpt: N; val: JSON ``step`` (1.x) or ``iter`` (0.x),
    which may not be the training iteration; None for a text val line.
    """

    kind: str
    iter: int | None = None
    max_iters: int | None = None
    time: float | None = None
    loss: float | None = None
    miou: float | None = None
    aacc: float | None = None
    macc: float | None = None
    stamp: str | None = None


@dataclass(frozen=True)
class Chunk:
    """What one read of a file gave: records, the offset after the last complete line, warnings."""

    records: tuple[Record, ...]
    offset: int
    warnings: tuple[str, ...]
    first_stamp: str | None = None  # first / last timestamped text line in this chunk
    last_stamp: str | None = None
    binary: bool = False


_TS_DIR = re.compile(r"^\d{8}_\d{6}$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STAMP = re.compile(r"^(?P<stamp>(?:\d{4}/)?\d{2}/\d{2} \d{2}:\d{2}:\d{2}) - \S+ - [A-Z]+ - (?P<msg>.*)$")
_HEADER = re.compile(
    # Iteration-based training only (mmseg 1.x): "Epoch(train) [1][ 50/270]" counts within an epoch.
    r"^Iter\((?P<mode>train|val|test)\)\s*\[\s*(?P<cur>\d+)\s*/\s*(?P<tot>\d+)\]"
)
_ETA = re.compile(r"eta: (?:\d+ days?, )?\d+:\d\d:\d\d(?:\.\d+)?")
_ITEM = re.compile(
    r"(?:^|\s)(?P<key>[A-Za-z_][\w./-]*): (?P<val>[-+]?(?:nan|inf|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))(?=\s|$)"
)
_SAVING = re.compile(r"^Saving checkpoint at (?P<n>\d+) iterations")
_METRICS = {"mIoU": "miou", "aAcc": "aacc", "mAcc": "macc"}


def _metric_key(key: str) -> str | None:
    """``mIoU``, ``val/mIoU`` (log_with_hierarchy) or ``prefix/mIoU`` -> ``miou``."""
    return _METRICS.get(key.rsplit("/", 1)[-1])


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def _split_lines(data: bytes, offset: int, final_json: bool) -> tuple[list[tuple[int, bytes]], int]:
    """Complete lines of ``data`` (bytes of a file from ``offset``) with their file offsets.

    A last line without a newline is a line being written: left for the next read, unless
    ``final_json`` and it is a whole JSON object already.
    """
    lines: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            tail = data[pos:]
            if final_json and tail.strip().startswith(b"{") and _json_dict(tail) is not None:
                lines.append((offset + pos, tail))
                pos = len(data)
            break
        lines.append((offset + pos, data[pos:end]))
        pos = end + 1
    return lines, offset + pos


def _json_dict(line: bytes) -> dict[str, object] | None:
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def parse_json_chunk(data: bytes, offset: int = 0, *, name: str = "", fractions: bool = False) -> Chunk:
    """Parse JSON-lines log bytes (``data`` = the file's bytes from ``offset``).

    Handles mmengine's ``scalars.json`` and mmseg 0.x's ``*.log.json`` (``fractions=True``:
    metrics are fractions and are reported in percent).
    """
    lines, new_offset = _split_lines(data, offset, final_json=True)
    records: list[Record] = []
    bad = 0
    first_bad: int | None = None
    nan_iters: list[int] = []
    for line_offset, line in lines:
        if not line.strip():
            continue
        obj = _json_dict(line)
        if obj is None:
            bad += 1
            first_bad = line_offset if first_bad is None else first_bad
            continue
        rec = _json_record(obj, fractions)
        if rec is None:
            continue
        if rec.kind == "train" and rec.loss is not None and not math.isfinite(rec.loss):
            nan_iters.append(rec.iter if rec.iter is not None else -1)
        records.append(rec)
    warnings: list[str] = []
    if bad:
        warnings.append(f"{name}: skipped {bad} unparsable line(s) (first at byte {first_bad})")
    if nan_iters:
        warnings.append(f"{name}: non-finite loss at iteration(s) {_iter_list(nan_iters)}")
    return Chunk(tuple(records), new_offset, tuple(warnings))


def _iter_list(iters: list[int]) -> str:
    shown = ", ".join(str(i) for i in iters[:5])
    return shown + (f" and {len(iters) - 5} more" if len(iters) > 5 else "")


def _json_record(obj: dict[str, object], fractions: bool) -> Record | None:
    mode = obj.get("mode")
    metrics: dict[str, float | None] = {}
    for key, value in obj.items():
        attr = _METRICS.get(key)
        if attr is None and "/" in key:
            attr = _metric_key(key)
        if attr is not None and attr not in metrics:
            num = _num(value)
            metrics[attr] = round(num * 100.0, 10) if (num is not None and fractions) else num
    if mode == "val" or (mode is None and metrics):
        if not metrics:
            return None
        step = _int(obj.get("iter")) if fractions else _int(obj.get("step"))
        return Record("val", iter=step, miou=metrics.get("miou"), aacc=metrics.get("aacc"), macc=metrics.get("macc"))
    if mode not in (None, "train"):
        return None
    it = _int(obj.get("iter"))
    if it is None:
        it = _int(obj.get("step"))
    loss = _num(obj.get("loss"))
    if loss is None:
        loss = _num(obj.get("train/loss"))
    if it is None or (loss is None and "lr" not in obj and "time" not in obj):
        return None
    seconds = _num(obj.get("time"))
    if seconds is None:
        seconds = _num(obj.get("train/time"))
    return Record("train", iter=it, time=seconds, loss=loss)


def parse_text_chunk(data: bytes, offset: int = 0, *, name: str = "") -> Chunk:
    """Parse mmengine text log bytes (the ``<ts>.log`` file or a job's console copy) from ``offset``."""
    lines, new_offset = _split_lines(data, offset, final_json=False)
    records: list[Record] = []
    first_stamp: str | None = None
    last_stamp: str | None = None
    nan_iters: list[int] = []
    binary = False
    for _line_offset, raw in lines:
        if b"\x00" in raw:
            binary = True
            continue
        stamp, rec = _text_line(raw)
        if stamp is None:
            continue
        first_stamp = first_stamp or stamp
        last_stamp = stamp
        if rec is None:
            continue
        if rec.kind == "train" and rec.loss is not None and not math.isfinite(rec.loss):
            nan_iters.append(rec.iter if rec.iter is not None else -1)
        records.append(rec)
    warnings: list[str] = []
    if binary:
        warnings.append(f"{name}: skipped binary data (NUL bytes)")
    if nan_iters:
        warnings.append(f"{name}: non-finite loss at iteration(s) {_iter_list(nan_iters)}")
    return Chunk(tuple(records), new_offset, tuple(warnings), first_stamp, last_stamp, binary)


def _text_line(raw: bytes) -> tuple[str | None, Record | None]:
    """One text log line (without its newline, no NUL bytes) -> (its timestamp, its record)."""
    text = raw.decode("utf-8", errors="replace")
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    match = _STAMP.match(text.rstrip("\r"))
    if match is None:
        return None, None
    stamp = match["stamp"]
    return stamp, _text_record(match["msg"], stamp)


def _text_record(msg: str, stamp: str) -> Record | None:
    saving = _SAVING.match(msg)
    if saving:
        return Record("ckpt", iter=int(saving["n"]), stamp=stamp)
    header = _HEADER.match(msg)
    if header is None:
        return None
    rest = _ETA.sub("", msg[header.end() :])
    items = {m["key"]: float(m["val"]) for m in _ITEM.finditer(rest)}
    if header["mode"] == "train":
        return Record(
            "train",
            iter=int(header["cur"]),
            max_iters=int(header["tot"]),
            time=items.get("time"),
            loss=items.get("loss"),
            stamp=stamp,
        )
    if header["mode"] == "val":
        metrics = {attr: v for k, v in items.items() if (attr := _metric_key(k)) is not None}
        if metrics:
            return Record(
                "val", stamp=stamp, miou=metrics.get("miou"), aacc=metrics.get("aacc"), macc=metrics.get("macc")
            )
    return None


# ---------------------------------------------------------------------------------------------
# Sparse parsing: only the lines that matter
#
# A run's status needs, per file: every val line and the train (or checkpoint) line before it,
# the first train line (where a resumed start begins), the last few train lines (position and
# speed), lines with a non-finite loss, and in a text log the first and last timestamps. Those
# are found with bytes.find / rfind over the whole buffer (C speed) and only they are parsed.
# A buffer that does not look like a clean log (NUL bytes, torn lines, colours, ...) or is small
# is parsed line by line instead, so warnings stay exact where they matter.

_TAIL = 5  # seconds_per_iter: the mean of the last 5 train records' `time`
_SPARSE_MIN = 1 << 16  # below this a full parse costs nothing
_TRAIN_TAG = b"Iter(train) ["
_CKPT_TAG = b"Saving checkpoint at "
_JSON_ITER = re.compile(rb'[{ ]"iter": (\d+)[,}]')
_JSON_NOT_PLAIN = re.compile(rb'[A-Z]|"mode"|/')
_JSON_TRAIN_KEY = re.compile(rb'"(?:loss|lr|time)": ')
_JSON_TIME = re.compile(rb'[{ ]"time": (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)[,}]')
_TEXT_VAL_TAGS = (b"mIoU: ", b"aAcc: ", b"mAcc: ")
_TEXT_NAN_TAGS = (b"loss: nan", b"loss: inf", b"loss: -inf", b"loss: +inf", b"loss: -nan", b"loss: +nan")

_Buffer = bytes | mmap.mmap


class _Fallback(Exception):
    """The buffer is not what the sparse parser expects: parse it line by line."""


@dataclass
class _Sparse:
    """What a sparse parse of one chunk gave (records in file order)."""

    records: list[Record]
    offset: int
    warnings: list[str]
    complete: bool  # records hold every train record of the chunk
    first_stamp: str | None = None
    last_stamp: str | None = None
    binary: bool = False


def _line_end(buf: _Buffer, start: int, end: int) -> int:
    e = buf.find(b"\n", start, end)
    return end if e < 0 else e


def _prev_line(buf: _Buffer, start: int, lo: int) -> int:
    """Start of the line before the one starting at ``start`` (``start`` > ``lo``)."""
    return buf.rfind(b"\n", lo, start - 1) + 1 if start - 1 > lo else lo


def _sparse_json(data: bytes, offset: int, name: str) -> _Sparse | None:
    end = data.rfind(b"\n") + 1
    if len(data) < _SPARSE_MIN or end == 0:
        return None
    tail = data[end:]
    if tail.strip().startswith(b"{") and _json_dict(tail) is not None:
        return None  # a complete record without its newline: the full parser's rule
    lines = data.count(b"\n", 0, end)
    # Every line one flat JSON object, ASCII (json.dumps' default): else parse line by line.
    # (Single-byte counts run at memchr speed; a torn or interleaved write breaks one of them.)
    if not (
        data.startswith(b"{")
        and data[end - 2 : end] == b"}\n"
        and data.count(b"{", 0, end) == lines
        and data.count(b"}", 0, end) == lines
        and data.isascii()
        and data.find(b"\x00", 0, end) < 0
    ):
        return None
    picked: dict[int, Record | None] = {}
    light: dict[int, bool] = {}  # lines in `picked` read by regex: whether their time is right too

    def parse(s: int) -> Record | None:
        if s not in picked or s in light:
            obj = _json_dict(data[s : _line_end(data, s, end)])
            if obj is None:
                raise _Fallback
            picked[s] = _json_record(obj, False)
            light.pop(s, None)
        return picked[s]

    def is_train(s: int, iter_only: bool = False) -> bool:
        if s in light and (iter_only or light[s]):
            return True
        if s not in picked:
            # A plain mmengine train line (no metric, no NaN, no mode, no hierarchy: no upper-case
            # letter or "/") with "iter" is a train record: its iteration and time need no json.loads.
            line = data[s : _line_end(data, s, end)]
            m = _JSON_ITER.search(line)
            if m and not _JSON_NOT_PLAIN.search(line) and _JSON_TRAIN_KEY.search(line):
                t = _JSON_TIME.search(line)
                picked[s] = Record("train", iter=int(m[1]), time=float(t[1]) if t else None)
                light[s] = t is not None or b'"time"' not in line
                return True
        rec = parse(s)
        return rec is not None and rec.kind == "train"

    try:
        # Val records have aAcc / mIoU / mAcc, a non-finite loss is NaN or Infinity: lines with an
        # upper-case A, I or N. mmseg's train keys are lower case, so these are few.
        for tag in b"AIN":
            pos = data.find(tag, 0, end)
            while pos >= 0:
                s = data.rfind(b"\n", 0, pos) + 1
                known = s in picked
                rec = parse(s)
                if not known and rec is not None and rec.kind == "val":  # and the train record before it
                    p = s
                    while p > 0:
                        p = _prev_line(data, p, 0)
                        if is_train(p, iter_only=True):
                            break
                pos = data.find(tag, _line_end(data, pos, end), end)
        s = 0  # the first train record
        while s < end and not is_train(s):
            s = _line_end(data, s, end) + 1
        complete, found, s = True, 0, end  # the last ones
        while s > 0:
            s = _prev_line(data, s, 0)
            found += is_train(s)
            if found >= _TAIL and s > 0:
                complete = False
                break
    except _Fallback:
        return None
    records = [r for _, r in sorted(picked.items()) if r is not None]
    nan_iters = [r.iter if r.iter is not None else -1 for r in records if _bad_loss(r)]
    warnings = [f"{name}: non-finite loss at iteration(s) {_iter_list(nan_iters)}"] if nan_iters else []
    return _Sparse(records, offset + end, warnings, complete)


def _bad_loss(rec: Record) -> bool:
    return rec.kind == "train" and rec.loss is not None and not math.isfinite(rec.loss)


class _TextPicker:
    """Parse chosen lines of a text log buffer between ``lo`` and ``end`` (complete lines)."""

    def __init__(self, buf: _Buffer, lo: int, end: int) -> None:
        self.buf, self.lo, self.end = buf, lo, end
        self.picked: dict[int, tuple[str | None, Record | None]] = {}

    def parse(self, s: int) -> tuple[str | None, Record | None]:
        if s not in self.picked:
            self.picked[s] = _text_line(bytes(self.buf[s : _line_end(self.buf, s, self.end)]))
        return self.picked[s]

    def line_start(self, pos: int) -> int:
        return self.buf.rfind(b"\n", self.lo, pos) + 1 or self.lo

    def find(self, tag: bytes, kind: str, start: int) -> int:
        """Start of the first line at or after ``start`` holding a ``kind`` record with ``tag``; -1 if none."""
        pos = self.buf.find(tag, start, self.end)
        while pos >= 0:
            s = self.line_start(pos)
            rec = self.parse(s)[1]
            if rec is not None and rec.kind == kind:
                return s
            pos = self.buf.find(tag, _line_end(self.buf, pos, self.end), self.end)
        return -1

    def rfind(self, tag: bytes, kind: str, before: int) -> int:
        """Start of the last line before ``before`` holding a ``kind`` record with ``tag``; -1 if none."""
        pos = self.buf.rfind(tag, self.lo, before)
        while pos >= 0:
            s = self.line_start(pos)
            rec = self.parse(s)[1]
            if rec is not None and rec.kind == kind:
                return s
            pos = self.buf.rfind(tag, self.lo, s)
        return -1

    def first_stamp(self, limit: int) -> str | None:
        s = self.lo
        while s < limit:
            stamp = self.parse(s)[0]
            if stamp is not None:
                return stamp
            s = _line_end(self.buf, s, self.end) + 1
        return None

    def last_stamp(self, limit: int) -> str | None:
        s = self.end
        while s > max(limit, self.lo):
            s = _prev_line(self.buf, s, self.lo)
            stamp = self.parse(s)[0]
            if stamp is not None:
                return stamp
        return None

    def records(self) -> list[Record]:
        return [r for _, (_, r) in sorted(self.picked.items()) if r is not None]


def _sparse_text(buf: _Buffer, lo: int, hi: int, offset: int, name: str, *, full: bool) -> _Sparse | None:
    """Sparse parse of ``buf[lo:hi]`` (file offset ``offset`` at ``lo``).

    ``full``: every val line with its train/checkpoint line before it (the text log is the only
    log of its start). Else only what a start with a JSON log needs from its text log: the first
    and last train lines and timestamps; the middle of the file is not read at all.
    """
    end = buf.rfind(b"\n", lo, hi) + 1
    if hi - lo < _SPARSE_MIN or end <= lo:
        return None
    pick = _TextPicker(buf, lo, end)
    binary = False
    first_train = pick.find(_TRAIN_TAG, "train", lo)
    if full:
        if buf.find(b"\x00", lo, end) >= 0 or buf.find(b"\x1b", lo, end) >= 0:
            return None
        for tag in _TEXT_VAL_TAGS:
            s = pick.find(tag, "val", lo)
            while s >= 0:
                pick.rfind(_TRAIN_TAG, "train", s)
                pick.rfind(_CKPT_TAG, "ckpt", s)
                s = pick.find(tag, "val", _line_end(buf, s, end) + 1)
        for tag in _TEXT_NAN_TAGS:
            s = pick.find(tag, "train", lo)
            while s >= 0:
                s = pick.find(tag, "train", _line_end(buf, s, end) + 1)
    complete, before = True, end
    for _ in range(_TAIL if full else 1):
        before = pick.rfind(_TRAIN_TAG, "train", before)
        if before < 0:
            break
    else:
        complete = pick.rfind(_TRAIN_TAG, "train", before) < 0
    last_train = max((s for s, (_, r) in pick.picked.items() if r is not None and r.kind == "train"), default=-1)
    if not full:
        # Binary garbage is looked for where this reads: up to the first and from the last train line.
        head_end = _line_end(buf, first_train, end) if first_train >= 0 else end
        tail_start = last_train if last_train >= 0 else head_end
        binary = buf.find(b"\x00", lo, head_end) >= 0 or buf.find(b"\x00", max(tail_start, head_end), end) >= 0
        if binary:
            return None
    first_stamp = pick.first_stamp(first_train if first_train >= 0 else end)
    if first_stamp is None and first_train >= 0:
        first_stamp = pick.parse(first_train)[0]
    last_stamp = pick.last_stamp(last_train)
    if last_stamp is None and last_train >= 0:
        last_stamp = pick.parse(last_train)[0]
    records = pick.records()
    nan_iters = [r.iter if r.iter is not None else -1 for r in records if _bad_loss(r)]
    warnings = [f"{name}: non-finite loss at iteration(s) {_iter_list(nan_iters)}"] if nan_iters else []
    return _Sparse(records, offset + end - lo, warnings, complete, first_stamp, last_stamp, binary)


# ---------------------------------------------------------------------------------------------
# Per-file state: compact, so a persistent cache stays small

_TrainT = tuple[int, float | None]  # iteration, seconds per iteration
_ValT = tuple[int | None, float | None, float | None, float | None, int | None]  # own iter, mIoU, aAcc, mAcc,
# and the latest train (JSON) or train/checkpoint (text) iteration before it


@dataclass
class _FileState:
    """Where a file was read to, and the summary of what it said (see :meth:`add`)."""

    inode: int
    size: int
    offset: int
    mtime: float = 0.0
    kind: str = ""
    warnings: list[str] = field(default_factory=list)
    first_stamp: str | None = None
    last_stamp: str | None = None
    first_train: tuple[int, str | None] | None = None  # iteration, text timestamp
    tail: list[_TrainT] = field(default_factory=list)  # the last _TAIL train records
    tail_complete: bool = True  # tail holds every train record of the file
    vals: list[_ValT] = field(default_factory=list)
    mark: int | None = None
    max_iters: int | None = None

    def add(self, records: Sequence[Record], complete: bool) -> None:
        """Fold records (in file order) in. ``complete``: they are all the chunk's train records."""
        for rec in records:
            if rec.kind == "train" and rec.iter is not None:
                if self.first_train is None:
                    self.first_train = (rec.iter, rec.stamp)
                self.tail.append((rec.iter, rec.time))
                if len(self.tail) > _TAIL:
                    del self.tail[0]
                    self.tail_complete = False
                if rec.max_iters:
                    self.max_iters = rec.max_iters
            if rec.kind in ("train", "ckpt") and rec.iter is not None:
                self.mark = rec.iter if self.mark is None else max(self.mark, rec.iter)
            elif rec.kind == "val":
                self.vals.append((rec.iter, rec.miou, rec.aacc, rec.macc, self.mark))
        if not complete:
            self.tail_complete = False

    def to_row(self) -> tuple[object, ...]:
        return (
            self.inode, self.size, self.offset, self.mtime, self.kind, tuple(self.warnings), self.first_stamp,
            self.last_stamp, self.first_train, tuple(self.tail), self.tail_complete, tuple(self.vals), self.mark,
            self.max_iters,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> _FileState:
        (inode, size, offset, mtime, kind, warnings, first_stamp, last_stamp) = row[:8]
        (first_train, tail, tail_complete, vals, mark, max_iters) = row[8:]
        if not (isinstance(inode, int) and isinstance(size, int) and isinstance(offset, int)):
            raise ValueError("bad file state")
        if not (isinstance(mtime, float) and isinstance(tail, tuple) and isinstance(vals, tuple)):
            raise ValueError("bad file state")
        state = cls(inode, size, offset, mtime, str(kind), list(warnings), first_stamp, last_stamp)
        state.first_train, state.tail, state.tail_complete = first_train, list(tail), bool(tail_complete)
        state.vals, state.mark, state.max_iters = list(vals), mark, max_iters
        return state


# ---------------------------------------------------------------------------------------------
# Reading files (whole or incrementally)
#
# kind: "json" (mmengine scalars.json), "json0" (mmseg 0.x *.log.json), "text" (a text log that
# is all there is of its start) or "texttail" (the text log of a start that has a JSON log: only
# its first/last train lines and timestamps are needed).

_MMAP_MIN = 1 << 20


def _read_file(
    path: Path | str,
    kind: str,
    old: _FileState | None,
    warnings: list[str],
    sparse: bool = True,
    st: os.stat_result | None = None,
) -> _FileState | None:
    """Parse ``path``, continuing from ``old`` when it still applies (``st``: its stat, if known)."""
    try:
        st = os.stat(path) if st is None else st
        if old is not None and (old.inode != st.st_ino or st.st_size < old.offset):
            old = None  # replaced or truncated: start over
        if old is not None and st.st_size == old.size and old.mtime == st.st_mtime:
            return old
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if old is not None and (old.inode != st.st_ino or st.st_size < old.offset):
                old = None
            start = old.offset if old is not None else 0
            if kind == "texttail" and sparse and st.st_size - start >= _MMAP_MIN:
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    chunk = _parse_chunk(mm, start, st.st_size, kind, str(path), sparse)
            else:
                fh.seek(start)
                data = fh.read()
                chunk = _parse_chunk(data, 0, len(data), kind, str(path), sparse, offset=start)
    except (OSError, ValueError) as exc:
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        warnings.append(f"{path}: cannot read ({msg})")
        return None
    state = old if old is not None else _FileState(inode=st.st_ino, size=0, offset=0, kind=kind)
    state.size = st.st_size
    state.mtime = st.st_mtime
    state.offset = chunk.offset
    state.add(chunk.records, chunk.complete)
    state.warnings.extend(chunk.warnings)
    if chunk.first_stamp is not None and state.first_stamp is None:
        state.first_stamp = chunk.first_stamp
    state.last_stamp = chunk.last_stamp or state.last_stamp
    return state


def _parse_chunk(
    buf: _Buffer, lo: int, hi: int, kind: str, name: str, sparse: bool, offset: int | None = None
) -> _Sparse:
    offset = lo if offset is None else offset
    if sparse:
        if kind == "json" and isinstance(buf, bytes):
            got = _sparse_json(buf, offset, name)
        elif kind in ("text", "texttail"):
            got = _sparse_text(buf, lo, hi, offset, name, full=kind == "text")
        else:
            got = None
        if got is not None:
            return got
    data = buf if isinstance(buf, bytes) and lo == 0 and hi == len(buf) else bytes(buf[lo:hi])
    if kind in ("json", "json0"):
        c = parse_json_chunk(data, offset, name=name, fractions=kind == "json0")
    else:
        c = parse_text_chunk(data, offset, name=name)
    return _Sparse(list(c.records), c.offset, list(c.warnings), True, c.first_stamp, c.last_stamp, c.binary)


def _all_train(path: Path | str, kind: str) -> list[_TrainT]:
    """Every train record of a file, by a full parse (when a resume cuts deeper than the kept tail)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return []
    if kind in ("json", "json0"):
        records = parse_json_chunk(data, name=str(path), fractions=kind == "json0").records
    else:
        records = parse_text_chunk(data, name=str(path)).records
    return [(r.iter, r.time) for r in records if r.kind == "train" and r.iter is not None]


_FILE_ROW_LENGTH = 14  # fields in _FileState.to_row()
_CACHE_FORMAT = "prove-jobs-logcache-4"  # change it whenever _FileState or the run memo changes


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/prove-jobs/logs.pickle`` (``~/.cache/prove-jobs/logs.pickle`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prove-jobs" / "logs.pickle"


class LogCache:
    """Keeps per-file (inode, size, offset, summary) so a re-read parses only appended bytes.

    :meth:`save` / :meth:`load` keep it across invocations (a small pickle of plain tuples, loaded
    without importing anything).
    """

    def __init__(self, *, sparse: bool = True) -> None:
        self._files: dict[tuple[str, str], _FileState] = {}
        self._sparse = sparse
        self._runs: dict[str, tuple[object, RunLog]] = {}  # work dir -> (what it was built from, result)
        self._rows: dict[tuple[str, str], tuple[Any, ...]] = {}  # loaded file states not needed yet
        # The file states from the cache file, one pickle per run dir, unpacked only when a file
        # of that run changed: an unchanged sweep needs nothing but the run summaries.
        self._blobs: dict[str, bytes] = {}

    def _unpack(self, group: str) -> None:
        blob = self._blobs.pop(group, None)
        if blob is None:
            return
        try:
            body = _PlainUnpickler(io.BytesIO(blob)).load()
            rows = {(str(p), str(kind)): tuple(row) for p, kind, row in body}
        except Exception:  # damaged: that run's files are read afresh
            return
        self._rows.update((key, row) for key, row in rows.items() if len(row) == _FILE_ROW_LENGTH)

    def _get(
        self, path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None
    ) -> _FileState | None:
        if not self._sparse and kind == "texttail":
            kind = "text"
        key = (str(path), kind)
        old = self._files.get(key)
        if old is None and self._blobs:
            self._unpack(_run_group(key[0]))
        if old is None and key in self._rows:  # from the cache file: built when first needed
            try:
                old = _FileState.from_row(self._rows.pop(key))
            except (ValueError, TypeError):
                old = None  # a damaged entry: read the file afresh
        state = _read_file(path, kind, old, warnings, self._sparse, st)
        if state is None:
            self._files.pop(key, None)
        else:
            self._files[key] = state
        return state

    def read_run_log(self, work_dir: Path) -> RunLog:
        return _read_run_log(Path(work_dir), self._get, self._sparse, self._runs)

    def prefetch(self, work_dirs: Sequence[Path], *, workers: int | None = None) -> int:
        """Read the run dirs this cache has never seen in ``workers`` processes; returns how many.

        A cold ``status`` of a big sweep is parsing bound: worker processes (forked, each with a
        cache of its own) read one share of the unseen runs each, and their file states and
        run summaries are merged here, so that :meth:`read_run_log` then finds every run done.
        Runs already known are left to the incremental path; few unseen runs are not worth it.
        """
        import concurrent.futures
        import multiprocessing

        unseen = [str(d) for d in work_dirs if str(d) not in self._runs]
        workers = min(workers or os.cpu_count() or 1, 8, len(unseen) // PREFETCH_MIN_RUNS_PER_WORKER)
        if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return 0
        shares = [unseen[i::workers] for i in range(workers)]
        context = multiprocessing.get_context("fork")  # the parent's imports and state, no re-import
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for files, runs in pool.map(_read_share, shares, [self._sparse] * workers):
                self._rows.update(files)
                self._runs.update(runs)
        return len(unseen)

    def read_text_log(self, path: Path) -> RunLog:
        return _read_text_log(Path(path), self._get)

    def save(self, path: Path) -> None:
        """Write the cache atomically (a temp file, then rename); errors are left to the caller."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        groups: dict[str, list[tuple[str, str, tuple[Any, ...]]]] = {}
        rows = {**self._rows, **{key: st.to_row() for key, st in self._files.items()}}
        for (p, kind), row in rows.items():
            groups.setdefault(_run_group(p), []).append((p, kind, row))
        blobs = dict(self._blobs)  # runs not looked at in this process: kept as they were
        blobs.update((group, pickle.dumps(tuple(items), protocol=pickle.HIGHEST_PROTOCOL))
                     for group, items in groups.items())
        body = (
            _CACHE_FORMAT,
            tuple(blobs.items()),
            tuple((work_dir, key, _log_to_row(log)) for work_dir, (key, log) in self._runs.items()),
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: Path) -> LogCache:
        """The cache saved at ``path``; an empty one if it is missing, corrupt or of another format."""
        cache = cls()
        try:
            # Tens of thousands of small objects at once: the cyclic GC would walk them again and
            # again while they are made (it tripled the load time), and none of them form cycles.
            with _gc_paused():
                with Path(path).open("rb") as fh:
                    body = _PlainUnpickler(fh).load()
                if not (isinstance(body, tuple) and len(body) == 3 and body[0] == _CACHE_FORMAT):
                    return cache
                blobs = {str(group): blob for group, blob in body[1]}
                if not all(isinstance(blob, bytes) for blob in blobs.values()):
                    raise ValueError("bad file states")
                runs = {str(work_dir): (key, _log_from_row(row)) for work_dir, key, row in body[2]}
        except Exception:  # any damage means: start cold
            return cache
        cache._blobs = blobs
        cache._runs = runs
        return cache


PREFETCH_MIN_RUNS_PER_WORKER = 32


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_share(work_dirs: list[str], sparse: bool) -> tuple[dict[tuple[str, str], tuple[Any, ...]],
                                                               dict[str, tuple[object, RunLog]]]:
    """In a worker: read ``work_dirs`` into a fresh cache and hand back its states as plain rows."""
    cache = LogCache(sparse=sparse)
    for work_dir in work_dirs:
        cache.read_run_log(Path(work_dir))
    return {key: state.to_row() for key, state in cache._files.items()}, cache._runs


def _run_group(path: str) -> str:
    """The run dir a log file belongs to: the parent of its ``<timestamp>/`` dir, else its own folder."""
    parts = path.split(os.sep)
    for index in range(len(parts) - 1, 0, -1):
        if _TS_DIR.match(parts[index]):
            return os.sep.join(parts[:index])
    return os.path.dirname(path)


def _log_to_row(log: RunLog) -> tuple[object, ...]:
    curve = tuple((p.iter, p.miou, p.aacc, p.macc) for p in log.curve)
    return (log.last_iter, log.max_iters, curve, log.starts, log.first_time, log.last_time,
            log.seconds_per_iter, tuple(log.warnings))


def _log_from_row(row: tuple[Any, ...]) -> RunLog:
    last_iter, max_iters, curve, starts, first_time, last_time, seconds_per_iter, warnings = row
    if not (isinstance(curve, tuple) and isinstance(starts, int) and isinstance(warnings, tuple)):
        raise ValueError("bad run summary")
    return RunLog(last_iter, max_iters, tuple(ValPoint._make(point) for point in curve), starts, first_time, last_time,
                  seconds_per_iter, tuple(str(w) for w in warnings))


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain data only (tuples, lists, str, numbers, None): never imports or calls anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a log cache")


def _uncached(path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None) -> _FileState | None:
    return _read_file(path, kind, None, warnings, True, st)


def _uncached_full(
    path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None
) -> _FileState | None:
    return _read_file(path, "text" if kind == "texttail" else kind, None, warnings, False, st)


# ---------------------------------------------------------------------------------------------
# Putting a run together


@dataclass
class _Start:
    """One training start: its resolved val points and what its train records say."""

    vals: list[ValPoint] = field(default_factory=list)
    max_iters: int | None = None
    first_train_time: float | None = None
    unresolved_vals: int = 0
    first_iter: int | None = None  # where this start's training (re)began
    tail: list[_TrainT] = field(default_factory=list)
    tail_complete: bool = True
    all_train: Callable[[], list[_TrainT]] | None = None


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


def _needs_text_vals(json_state: _FileState) -> bool:
    """Whether some JSON val's ``step`` may not be its iteration (then the text log can tell more)."""
    return any(own is None or own <= 0 or (mark is not None and own < mark) for own, *_, mark in json_state.vals)


def _build_start(
    json_state: _FileState | None,
    text_state: _FileState | None,
    year: int | None,
    legacy: bool = False,
    all_train: Callable[[], list[_TrainT]] | None = None,
) -> _Start:
    start = _Start(all_train=all_train)
    if text_state is not None:
        start.max_iters = text_state.max_iters
        if text_state.first_train is not None:
            start.first_train_time = _stamp_to_unix(text_state.first_train[1], year)
    train_src = json_state if json_state is not None else text_state
    if train_src is not None:
        start.first_iter = train_src.first_train[0] if train_src.first_train is not None else None
        start.tail = train_src.tail
        start.tail_complete = train_src.tail_complete
    if json_state is None:
        for _own, miou, aacc, macc, mark in text_state.vals if text_state is not None else []:
            if mark is not None:
                start.vals.append(ValPoint(mark, miou, aacc, macc))
            else:
                start.unresolved_vals += 1
        return start
    text_vals = text_state.vals if text_state is not None and text_state.kind == "text" else []
    # The text line of a val is written just before its JSON record: the k-th lines match when
    # the counts agree (or the text is one ahead).
    use_text = len(text_vals) in (len(json_state.vals), len(json_state.vals) + 1)
    for k, (own, miou, aacc, macc, last_train) in enumerate(json_state.vals):
        # `step` is the iteration (log_metric_by_epoch=False) or an epoch count, which is never
        # larger than the iteration: the largest lower bound is the iteration.
        # (mmseg 0.x: the val record's `iter` is the val dataloader length; its train record precedes it.)
        own = own if not (legacy and last_train) else None
        bounds = [b for b in (own, last_train, text_vals[k][4] if use_text else None) if b]
        if bounds:
            start.vals.append(ValPoint(max(bounds), miou, aacc, macc))
        else:
            start.unresolved_vals += 1
    return start


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
    # one began; the last _TAIL of them give the speed.
    kept: list[_TrainT] = []
    last_iter: int | None = None
    bound: int | None = None
    for st in reversed(starts):
        if st.first_iter is None:
            continue
        recs = [r for r in st.tail if bound is None or r[0] < bound]
        if len(recs) < _TAIL - len(kept) and not st.tail_complete and st.all_train is not None:
            recs = [r for r in st.all_train() if bound is None or r[0] < bound]
        by_iter = dict(recs)  # a repeated iteration: the later record
        if by_iter:
            if last_iter is None:
                last_iter = max(by_iter)
            kept = sorted(by_iter.items())[-(_TAIL - len(kept)) :] + kept
        bound = st.first_iter if bound is None else min(bound, st.first_iter)
        if len(kept) >= _TAIL:
            break
    times = [t for _, t in kept[-_TAIL:] if t is not None and math.isfinite(t)]
    seconds = sum(times) / len(times) if times else None
    return RunLog(
        last_iter=last_iter,
        max_iters=max_iters,
        curve=tuple(curve[i] for i in sorted(curve)),
        starts=n_starts,
        first_time=first_time,
        last_time=last_time,
        seconds_per_iter=seconds,
        warnings=tuple(warnings),
    )


class _GetterType(Protocol):
    def __call__(
        self, path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None
    ) -> _FileState | None: ...


def _year_hint(path: Path) -> int | None:
    try:
        return time.localtime(path.stat().st_mtime).tm_year
    except OSError:
        return None


def _stat_file(path: str) -> os.stat_result | None:
    """``path``'s stat when it is a regular file, else None (missing, a directory, unreadable parent)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _read_run_log(
    work_dir: Path, get: _GetterType, sparse: bool = True, memo: dict[str, tuple[object, RunLog]] | None = None
) -> RunLog:
    warnings: list[str] = []
    try:
        entries = sorted(os.scandir(work_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return EMPTY
    except OSError as exc:
        return RunLog(None, None, (), 0, None, None, None, (f"{work_dir}: cannot list ({exc.strerror or exc})",))
    # First which files make the run and their stat; with a memo, a run none of whose files
    # changed (inode, size, mtime) is answered without parsing or putting it together again.
    legacy_files: list[tuple[str, os.stat_result]] = []
    plan: list[tuple[str, str | None, os.stat_result | None, str, os.stat_result | None]] = []
    for entry in entries:
        if entry.name.endswith(".log.json") and _is_file(entry):
            legacy_st = _stat_file(entry.path)
            if legacy_st is not None:
                legacy_files.append((entry.path, legacy_st))
    n_starts = len(legacy_files)
    for entry in entries:
        if not (_TS_DIR.match(entry.name) and _is_dir(entry)):
            continue
        ts_dir = entry.path
        vis_data = os.path.join(ts_dir, "vis_data")
        json_path: str | None = os.path.join(vis_data, "scalars.json")
        json_st = _stat_file(json_path) if json_path else None
        if json_st is None:
            has_vis = os.path.isdir(vis_data)
            if not has_vis and _stat_file(os.path.join(ts_dir, f"{entry.name}.json")):
                continue  # a Runner.test() run: <ts>/<ts>.json holds test metrics, not training
            json_path = os.path.join(vis_data, f"{entry.name}.json") if has_vis else None
            json_st = _stat_file(json_path) if json_path else None
        n_starts += 1
        log_path = os.path.join(ts_dir, f"{entry.name}.log")
        plan.append((entry.name, json_path, json_st, log_path, _stat_file(log_path)))
    key: object = None
    if memo is not None:
        stats = [st for _, st in legacy_files] + [st for p in plan for st in (p[2], p[4]) if st is not None]
        key = (sparse, tuple(p[0] for p in plan), tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats))
        hit = memo.get(str(work_dir))
        if hit is not None and hit[0] == key:
            return hit[1]

    legacy: list[tuple[str, _FileState]] = []
    for path, legacy_st in legacy_files:
        state = get(path, "json0", warnings, legacy_st)
        if state is not None:
            legacy.append((path, state))
    timed: list[tuple[str, _FileState | None, str | None, _FileState | None, str]] = []
    for name, json_path, json_st, log_path, log_st in plan:
        json_state = get(json_path, "json", warnings, json_st) if json_path and json_st else None
        if json_state is None:
            json_path = None
        text_state: _FileState | None = None
        if log_st is not None:
            need_vals = json_state is None or not sparse or _needs_text_vals(json_state)
            text_state = get(log_path, "text" if need_vals else "texttail", warnings, log_st)
        timed.append((name, json_state, json_path, text_state, log_path))
    starts: list[_Start] = []
    last_time: float | None = None
    for path, state in legacy:
        warnings.extend(state.warnings)
        starts.append(_build_start(state, None, None, legacy=True, all_train=partial(_all_train, path, "json0")))
    for name, json_state, json_path, text_state, log_path in timed:
        stamp_time: float | None = None
        if json_state is not None:
            warnings.extend(json_state.warnings)
        if text_state is not None:
            if json_state is None:
                warnings.extend(text_state.warnings)
            else:  # the JSON is what counts; the text only for times and iterations
                warnings.extend(w for w in text_state.warnings if "binary" in w)
            stamp_time = _stamp_to_unix(text_state.last_stamp, None)
        if stamp_time is None and json_state is not None:
            stamp_time = json_state.mtime  # no text log: when the JSON was last written
        if stamp_time is not None:
            last_time = stamp_time if last_time is None else max(last_time, stamp_time)
        src = (json_path, "json") if json_path is not None else (log_path, "text")
        start = _build_start(json_state, text_state, None, all_train=partial(_all_train, *src))
        if start.unresolved_vals:
            warnings.append(f"{name}: {start.unresolved_vals} val record(s) without a training iteration skipped")
        starts.append(start)
    log = _merge(starts, n_starts, warnings, last_time)
    if memo is not None and key is not None and not warnings:  # a warning (a torn line) is worth a re-read
        memo[str(work_dir)] = (key, log)
    return log


def _read_text_log(path: Path, get: _GetterType) -> RunLog:
    warnings: list[str] = []
    try:
        path.stat()
    except FileNotFoundError:
        return EMPTY
    except OSError:
        pass  # reported by the read below
    state = get(path, "text", warnings)
    if state is None:
        return RunLog(None, None, (), 0, None, None, None, tuple(warnings))
    warnings.extend(state.warnings)
    year = _year_hint(path)
    all_train = partial(_all_train, path, "text")
    start = _build_start(None, state, year, all_train=all_train)
    last_time = _stamp_to_unix(state.last_stamp, year)
    mtime = state.mtime
    # A console timestamp has no year: the file's mtime year, or the one before if that is in the future.
    if year is not None and last_time is not None and last_time > mtime + 86400:
        start = _build_start(None, state, year - 1, all_train=all_train)
        last_time = _stamp_to_unix(state.last_stamp, year - 1)
    n = 1 if state.first_stamp is not None else 0
    return _merge([start], n, warnings, last_time)


def _is_file(entry: os.DirEntry[str] | Path) -> bool:
    """``is_file()`` that says False instead of raising (e.g. PermissionError on the parent)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str] | Path) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def read_run_log(work_dir: Path) -> RunLog:
    """Everything the logs under ``work_dir`` say about the run; never raises for bad or missing files."""
    return _read_run_log(Path(work_dir), _uncached)


def read_text_log(path: Path) -> RunLog:
    """The same from one text log, e.g. a job's stdout (console format: no year, ANSI colours)."""
    return _read_text_log(Path(path), _uncached)


def read_run_log_full(work_dir: Path) -> RunLog:
    """:func:`read_run_log` parsing every line of every file (the reference the sparse reader must equal)."""
    return _read_run_log(Path(work_dir), _uncached_full, sparse=False)
