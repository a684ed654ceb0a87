"""Sparse parsing: only the lines that matter.

A run's status needs, per file: every val line and the train (or checkpoint) line before it,
the first train line (where a resumed start begins), the last few train lines (position and
speed), lines with a non-finite loss, and in a text log the first and last timestamps. Those
are found with bytes.find / rfind over the whole buffer (C speed) and only they are parsed.
A buffer that does not look like a clean log (NUL bytes, torn lines, colours, ...) or is small
is parsed line by line instead (``records.py``), so warnings stay exact where they matter.
"""

from __future__ import annotations

import functools
import mmap
import re
from dataclasses import dataclass

from prove_jobs.logs.records import (
    CFG_TAGS,
    LIMITS,
    TAIL,
    Record,
    checked_record,
    json_dict,
    json_record,
    nonfinite_loss_warning,
    rejected_warnings,
    text_line,
)

# A train line of each loop and tool: mmengine's iteration and epoch loops, mmcv's (mmseg 0.x); one file has one.
_TRAIN_TAGS = (b"Iter(train) [", b"Epoch(train)", b" - Iter [", b" - Epoch [")
_CKPT_TAG = b"Saving checkpoint at "
_RESUMED_TAG = b"resumed "
_TEST_TAGS = (b"Iter(test) [", b"Epoch(test) [")


@functools.cache
def _json_patterns() -> tuple[re.Pattern[bytes], re.Pattern[bytes], re.Pattern[bytes], re.Pattern[bytes]]:
    """iter, not-plain, train key, time: compiled on first use (a warm ``status`` parses nothing)."""
    # an iteration of at most 9 digits (values.MAX_ITERS): a longer one is parsed in full, and checked
    return (re.compile(rb'[{ ]"iter": (\d{1,9})[,}]'), re.compile(rb'[A-Z]|"mode"|/'),
            re.compile(rb'"(?:loss|lr|time)": '),
            re.compile(rb'[{ ]"time": (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)[,}]'))

_TEXT_VAL_TAGS = (b"mIoU: ", b"aAcc: ", b"mAcc: ", b"mDice: ", b"mFscore: ")
_TEXT_NAN_TAGS = (b"loss: nan", b"loss: inf", b"loss: -inf", b"loss: +inf", b"loss: -nan", b"loss: +nan")

Buffer = bytes | mmap.mmap


class _Fallback(Exception):
    """The buffer is not what the sparse parser expects: parse it line by line."""


@dataclass
class Sparse:
    """What a sparse parse of one chunk gave (records in file order)."""

    records: list[Record]
    offset: int
    warnings: list[str]
    complete: bool  # records hold every train record of the chunk
    first_stamp: str | None = None
    last_stamp: str | None = None
    binary: bool = False
    how: str = "line by line"  # which parser answered, for the -vv log


def line_end(buf: Buffer, start: int, end: int) -> int:
    e = buf.find(b"\n", start, end)
    return end if e < 0 else e


def prev_line(buf: Buffer, start: int, lo: int) -> int:
    """Start of the line before the one starting at ``start`` (``start`` > ``lo``)."""
    return buf.rfind(b"\n", lo, start - 1) + 1 if start - 1 > lo else lo


def sparse_json(data: bytes, offset: int, name: str) -> Sparse | None:
    """Sparse parse of a ``scalars.json`` buffer; ``None`` when it is small or not a clean log."""
    end = _clean_json_end(data)
    if end is None:
        return None
    pick = _JsonPicker(data, end)
    try:
        pick.vals_and_the_train_before()
        pick.first_train()
        complete = pick.last_trains()
    except _Fallback:
        return None
    records = [r for _, r in sorted(pick.picked.items()) if r is not None]
    warnings = nonfinite_loss_warning(name, records) + rejected_warnings(name, records)
    return Sparse(records, offset + end, warnings, complete)


def _clean_json_end(data: bytes) -> int | None:
    """The end of the last complete line when every line is one flat ASCII JSON object, else ``None``.

    Single-byte counts run at memchr speed; a torn or interleaved write breaks one of them.
    """
    end = data.rfind(b"\n") + 1
    if len(data) < LIMITS.sparse_min_bytes or end == 0:
        return None
    tail = data[end:]
    if tail.strip().startswith(b"{") and json_dict(tail) is not None:
        return None  # a complete record without its newline: the full parser's rule
    lines = data.count(b"\n", 0, end)
    clean = (data.startswith(b"{") and data[end - 2 : end] == b"}\n" and data.count(b"{", 0, end) == lines
             and data.count(b"}", 0, end) == lines and data.isascii() and data.find(b"\x00", 0, end) < 0)
    return end if clean else None


class _JsonPicker:
    """Parse chosen lines of a clean JSON-lines buffer (complete lines up to ``end``)."""

    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.end = data, end
        self.picked: dict[int, Record | None] = {}
        self.light: dict[int, bool] = {}  # lines in `picked` read by regex: whether their time is right too
        self.patterns = _json_patterns()

    def parse(self, s: int) -> Record | None:
        if s not in self.picked or s in self.light:
            obj = json_dict(self.data[s : line_end(self.data, s, self.end)])
            if obj is None:
                raise _Fallback
            self.picked[s] = json_record(obj, False)
            self.light.pop(s, None)
        return self.picked[s]

    def is_train(self, s: int, iter_only: bool = False) -> bool:
        if s in self.light and (iter_only or self.light[s]):
            return True
        if s not in self.picked:
            # A plain mmengine train line (no metric, no NaN, no mode, no hierarchy: no upper-case
            # letter or "/") with "iter" is a train record: its iteration and time need no json.loads.
            line = self.data[s : line_end(self.data, s, self.end)]
            json_iter, not_plain, train_key, json_time = self.patterns
            m = json_iter.search(line)
            if m and not not_plain.search(line) and train_key.search(line):
                t = json_time.search(line)
                light = checked_record("train", {"iter": int(m[1]), "time": float(t[1]) if t else None})
                if not light.rejected:  # else parsed in full below: its warning comes from there
                    self.picked[s] = light
                    self.light[s] = t is not None or b'"time"' not in line
                    return True
        rec = self.parse(s)
        return rec is not None and rec.kind == "train"

    def vals_and_the_train_before(self) -> None:
        """Val records have aAcc / mIoU / mAcc / mDice / mFscore, a non-finite loss is NaN or Infinity: lines
        with an upper-case A, I, N, D or F. mmseg's train keys are lower case, so these are few."""
        data, end = self.data, self.end
        for tag in b"AINDF":
            pos = data.find(tag, 0, end)
            while pos >= 0:
                s = data.rfind(b"\n", 0, pos) + 1
                known = s in self.picked
                rec = self.parse(s)
                if not known and rec is not None and rec.kind == "val":
                    p = s
                    while p > 0:
                        p = prev_line(data, p, 0)
                        if self.is_train(p, iter_only=True):
                            break
                pos = data.find(tag, line_end(data, pos, end), end)

    def first_train(self) -> None:
        s = 0
        while s < self.end and not self.is_train(s):
            s = line_end(self.data, s, self.end) + 1

    def last_trains(self) -> bool:
        """Pick the last TAIL train records, the very last one in full; whether they are all the buffer has."""
        found, s = 0, self.end
        while s > 0:
            s = prev_line(self.data, s, 0)
            if self.is_train(s):
                found += 1
                if found == 1:
                    self.parse(s)  # its loss, lr, data_time, memory: what the dashboard shows of a live run
            if found >= TAIL and s > 0:
                return False
        return True


class _TextPicker:
    """Parse chosen lines of a text log buffer between ``lo`` and ``end`` (complete lines)."""

    def __init__(self, buf: Buffer, lo: int, end: int) -> None:
        self.buf, self.lo, self.end = buf, lo, end
        self.picked: dict[int, tuple[str | None, Record | None]] = {}

    def parse(self, s: int) -> tuple[str | None, Record | None]:
        if s not in self.picked:
            self.picked[s] = text_line(bytes(self.buf[s : line_end(self.buf, s, self.end)]))
        return self.picked[s]

    def line_start(self, pos: int) -> int:
        return self.buf.rfind(b"\n", self.lo, pos) + 1 or self.lo

    def find(self, tag: bytes, kind: str, start: int, stop: int | None = None) -> int:
        """Start of the first line at or after ``start`` (before ``stop``) holding a ``kind`` record with ``tag``;
        -1 if none."""
        stop = self.end if stop is None else stop
        pos = self.buf.find(tag, start, stop)
        while pos >= 0:
            s = self.line_start(pos)
            rec = self.parse(s)[1]
            if rec is not None and rec.kind == kind:
                return s
            pos = self.buf.find(tag, line_end(self.buf, pos, self.end), stop)
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
            s = line_end(self.buf, s, self.end) + 1
        return None

    def last_stamp(self, limit: int) -> str | None:
        s = self.end
        while s > max(limit, self.lo):
            s = prev_line(self.buf, s, self.lo)
            stamp = self.parse(s)[0]
            if stamp is not None:
                return stamp
        return None

    def records(self) -> list[Record]:
        return [r for _, (_, r) in sorted(self.picked.items()) if r is not None]


def sparse_text(buf: Buffer, lo: int, hi: int, offset: int, name: str, *, full: bool) -> Sparse | None:
    """Sparse parse of ``buf[lo:hi]`` (file offset ``offset`` at ``lo``).

    ``full``: every val line with its train/checkpoint line before it (the text log is the only
    log of its start). Else only what a start with a JSON log needs from its text log: the first
    and last train lines and timestamps; the middle of the file is not read at all.
    """
    end = buf.rfind(b"\n", lo, hi) + 1
    if hi - lo < LIMITS.sparse_min_bytes or end <= lo:
        return None
    tags = [tag for tag in _TRAIN_TAGS if buf.find(tag, lo, end) >= 0]
    if len(tags) > 1:
        return None  # not one tool's log: line by line
    train_tag = tags[0] if tags else _TRAIN_TAGS[0]
    pick = _TextPicker(buf, lo, end)
    binary = False
    first_train = pick.find(train_tag, "train", lo)
    for tag in CFG_TAGS:  # the config dump at the head: what the run was planned to do
        s = pick.find(tag, "cfg", lo, first_train if first_train >= 0 else end)
        while s >= 0:
            s = pick.find(tag, "cfg", line_end(buf, s, end) + 1, first_train if first_train >= 0 else end)
    if full:
        if buf.find(b"\x00", lo, end) >= 0 or buf.find(b"\x1b", lo, end) >= 0:
            return None
        for tag in _TEXT_VAL_TAGS:
            s = pick.find(tag, "val", lo)
            while s >= 0:
                pick.rfind(train_tag, "train", s)
                pick.rfind(_CKPT_TAG, "ckpt", s)
                s = pick.find(tag, "val", line_end(buf, s, end) + 1)
        for tag in _TEXT_NAN_TAGS:
            s = pick.find(tag, "train", lo)
            while s >= 0:
                s = pick.find(tag, "train", line_end(buf, s, end) + 1)
    complete, before = True, end
    for _ in range(TAIL if full else 1):
        before = pick.rfind(train_tag, "train", before)
        if before < 0:
            break
    else:
        complete = pick.rfind(train_tag, "train", before) < 0
    last_train = max((s for s, (_, r) in pick.picked.items() if r is not None and r.kind == "train"), default=-1)
    if not full and last_train >= 0:  # an epoch that ended after the last train line: its checkpoint, its val
        for tag in (_CKPT_TAG, b"Epoch(val)"):
            s = pick.find(tag, "ckpt", last_train)
            while s >= 0:
                s = pick.find(tag, "ckpt", line_end(buf, s, end) + 1)
    _lineage_lines(pick, first_train, last_train)
    if not full:
        # Binary garbage is looked for where this reads: up to the first and from the last train line.
        head_end = line_end(buf, first_train, end) if first_train >= 0 else end
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
    warnings = nonfinite_loss_warning(name, records) + rejected_warnings(name, records)
    return Sparse(records, offset + end - lo, warnings, complete, first_stamp, last_stamp, binary)


def _lineage_lines(pick: _TextPicker, first_train: int, last_train: int) -> None:
    """What the lineage needs (``lineage.py``): the last checkpoint and val lines after the last train line (the
    start's last training line: warnings after it are not training), the "resumed ..." line before the first
    train line, and, in a log without train lines, an ``Iter(test)`` line (a test-only start)."""
    buf, lo, end = pick.buf, pick.lo, pick.end
    for tag in (*_TEXT_VAL_TAGS, _CKPT_TAG):
        pos = buf.rfind(tag, max(last_train, lo), end)
        if pos >= 0:
            pick.parse(pick.line_start(pos))
    head = first_train if first_train >= 0 else end
    pos = buf.find(_RESUMED_TAG, lo, head)
    while pos >= 0:
        rec = pick.parse(pick.line_start(pos))[1]
        if rec is not None and rec.kind == "resume":
            break
        pos = buf.find(_RESUMED_TAG, line_end(buf, pos, end), head)
    for tag in _TEST_TAGS if first_train < 0 else ():
        pick.find(tag, "test", lo)
