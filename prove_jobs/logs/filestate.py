"""Per-file state: where a file was read to and a compact summary of what it said.

Compact, so that a persistent cache stays small; a re-read continues from the offset.

kind: "json" (mmengine scalars.json), "json0" (mmseg 0.x *.log.json), "text" (a text log that
is all there is of its start) or "texttail" (the text log of a start that has a JSON log: only
its first/last train lines and timestamps are needed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from prove_jobs.logs.layout import run_dir_of
from prove_jobs.logs.records import LIMITS, Record, parse_json_chunk, parse_text_chunk
from prove_jobs.logs.runlog import TAIL
from prove_jobs.logs.sparse import Buffer, Sparse, sparse_json, sparse_text
from prove_jobs.verbose import DEBUG, LOGS, say

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TrainT = tuple[int, float | None]  # iteration, seconds per iteration
ValT = tuple[int | None, float | None, float | None, float | None, int | None, int | None, int | None]
# own iter, mIoU (or the run's main metric, FileState.metric), aAcc, mAcc, the latest train (JSON) or
# train/checkpoint (text) iteration before it, the first train iteration after it, and its epoch (epoch loops)


@dataclass
class FileState:
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
    tail: list[TrainT] = field(default_factory=list)  # the last TAIL train records
    tail_complete: bool = True  # tail holds every train record of the file
    vals: list[ValT] = field(default_factory=list)
    mark: int | None = None
    max_iters: int | None = None
    last_train: tuple[int, float | None, float | None, float | None, float | None, float | None] | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (field, why): the first left out, per field
    # Epoch-based loops, and what a config dump said (formats.py): see Record
    by_epoch: bool = False
    per_epoch: int | None = None  # iterations per epoch (a text log's `[i/n]`)
    epoch: int | None = None  # the latest epoch a train, checkpoint or val record named
    max_epochs: int | None = None
    cfg_max_iters: int | None = None
    eval_interval: int | None = None  # mmseg 0.x's `evaluation = dict(interval=...)`
    metric: str | None = None  # what the vals' mIoU slot holds when not mIoU (mDice, mFscore)
    has_metric_vals: bool = False  # some val had a main metric (mIoU or metric)
    epoch_done: int | None = None  # the latest epoch whose end a line showed (its checkpoint, its val)
    work_stamp: str | None = None  # the last training line's timestamp (train, checkpoint, val): the start's end
    resumed_from: int | None = None  # "resumed epoch: E, iter: N": the checkpoint's iteration
    tested: bool = False  # an Iter(test) line: a Runner.test() start

    def add(self, records: Sequence[Record], complete: bool) -> None:
        """Fold records (in file order) in. ``complete``: they are all the chunk's train records."""
        for rec in records:
            for name, why in rec.rejected:
                if all(name != seen for seen, _ in self.rejected):
                    self.rejected.append((name, why))
            if rec.kind == "cfg":
                self.max_epochs = self.max_epochs or rec.max_epochs
                self.cfg_max_iters = self.cfg_max_iters or rec.max_iters
                self.eval_interval = self.eval_interval or rec.eval_interval
                continue
            if rec.by_epoch and rec.kind in ("train", "val", "ckpt") and self.kind != "json0":
                self.by_epoch = True
            if rec.per_epoch:
                self.per_epoch = rec.per_epoch
            if rec.kind == "train" and rec.iter is not None and self.vals and self.vals[-1][5] is None:
                for k in range(len(self.vals) - 1, -1, -1):  # the vals since the previous train record
                    if self.vals[k][5] is not None:
                        break
                    self.vals[k] = (*self.vals[k][:5], rec.iter, self.vals[k][6])
            if rec.kind == "ckpt" and rec.epoch is not None:
                self.epoch_done = max(self.epoch_done or 0, rec.epoch)
                rec = replace(rec, iter=rec.epoch * self.per_epoch if self.per_epoch else None)
            if rec.kind == "train" and rec.iter is not None:
                if self.first_train is None:
                    self.first_train = (rec.iter, rec.stamp)
                self.tail.append((rec.iter, rec.time))
                self.last_train = (rec.iter, rec.time, rec.data_time, rec.loss, rec.lr, rec.memory)
                if len(self.tail) > TAIL:
                    del self.tail[0]
                    self.tail_complete = False
                if rec.max_iters:
                    self.max_iters = rec.max_iters
            if rec.kind in ("train", "ckpt") and rec.iter is not None:
                self.mark = rec.iter if self.mark is None else max(self.mark, rec.iter)
            elif rec.kind == "val":
                epoch = rec.epoch if self.by_epoch else None
                if epoch is None and self.by_epoch and self.kind == "json" and rec.iter is not None and (
                        self.epoch is not None and rec.iter <= self.epoch):
                    epoch = rec.iter  # mmengine's `step` with log_metric_by_epoch: the epoch
                self.vals.append((rec.iter, rec.miou, rec.aacc, rec.macc, self.mark, None, epoch))
                if epoch is not None:
                    self.epoch_done = max(self.epoch_done or 0, epoch)
                if rec.miou is not None and not self.has_metric_vals:
                    self.has_metric_vals, self.metric = True, rec.metric
            elif rec.kind == "resume":
                self.resumed_from = rec.iter
            elif rec.kind == "test":
                self.tested = True
            if self.by_epoch and rec.epoch is not None and rec.kind in ("train", "val", "ckpt"):
                self.epoch = max(self.epoch or 0, rec.epoch)
            if rec.stamp is not None and rec.kind in ("train", "ckpt", "val"):
                self.work_stamp = rec.stamp
        if not complete:
            self.tail_complete = False

    def to_row(self) -> tuple[object, ...]:
        return (
            self.inode, self.size, self.offset, self.mtime, self.kind, tuple(self.warnings), self.first_stamp,
            self.last_stamp, self.first_train, tuple(self.tail), self.tail_complete, tuple(self.vals), self.mark,
            self.max_iters, self.last_train, tuple(self.rejected),
            (self.by_epoch, self.per_epoch, self.epoch, self.max_epochs, self.cfg_max_iters, self.eval_interval,
             self.metric, self.has_metric_vals, self.epoch_done),
            self.work_stamp, self.resumed_from, self.tested,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> FileState:
        (inode, size, offset, mtime, kind, warnings, first_stamp, last_stamp) = row[:8]
        (first_train, tail, tail_complete, vals, mark, max_iters, last_train, rejected, formats) = row[8:17]
        (work_stamp, resumed_from, tested) = row[17:]
        if not (isinstance(inode, int) and isinstance(size, int) and isinstance(offset, int)):
            raise ValueError("bad file state")
        if not (isinstance(mtime, float) and isinstance(tail, tuple) and isinstance(vals, tuple)):
            raise ValueError("bad file state")
        state = cls(inode, size, offset, mtime, str(kind), list(warnings), first_stamp, last_stamp)
        state.first_train, state.tail, state.tail_complete = first_train, list(tail), bool(tail_complete)
        state.vals, state.mark, state.max_iters = list(vals), mark, max_iters
        if last_train is not None and not (isinstance(last_train, tuple) and len(last_train) == 6):
            raise ValueError("bad file state")
        state.last_train = last_train
        state.rejected = [(str(name), str(why)) for name, why in rejected]
        if not (isinstance(formats, tuple) and len(formats) == 9 and all(len(v) == 7 for v in state.vals)):
            raise ValueError("bad file state")
        (state.by_epoch, state.per_epoch, state.epoch, state.max_epochs, state.cfg_max_iters, state.eval_interval,
         state.metric, state.has_metric_vals, state.epoch_done) = formats
        if not (work_stamp is None or isinstance(work_stamp, str)) or not (resumed_from is None
                                                                            or isinstance(resumed_from, int)):
            raise ValueError("bad file state")
        state.work_stamp, state.resumed_from, state.tested = work_stamp, resumed_from, bool(tested)
        return state

    def planned_iters(self) -> int | None:
        """The iterations the run was to train: its train lines' ``[i/N]``, else its epochs times the iterations
        per epoch, else its config's ``max_iters``; None when the log does not say (or its start trained nothing:
        a test-only start's config may be another's)."""
        if self.first_train is None:
            return None
        if self.by_epoch:
            return self.max_epochs * self.per_epoch if self.max_epochs and self.per_epoch else None
        return self.max_iters or self.cfg_max_iters


def read_file(
    path: Path | str,
    kind: str,
    old: FileState | None,
    warnings: list[str],
    sparse: bool = True,
    st: os.stat_result | None = None,
) -> FileState | None:
    """Parse ``path``, continuing from ``old`` when it still applies (``st``: its stat from the listing, if known).

    Opened without following a link or waiting on a FIFO (:mod:`prove_jobs.safe_read`), and read window by
    window: memory stays bounded whatever the file holds. A file that is not what the listing saw (swapped
    for a FIFO, or for another file, after its stat) is a warning, not a read.
    """
    from prove_jobs.safe_read import NotReadable, open_file

    try:
        fd, now = open_file(path, below=run_dir_of(str(path)))
    except (NotReadable, OSError) as exc:
        warnings.append(str(exc) if isinstance(exc, NotReadable) else f"{path}: cannot read ({exc.strerror or exc})")
        return None
    try:
        if st is not None and (st.st_ino, st.st_dev) != (now.st_ino, now.st_dev):
            warnings.append(f"{path}: cannot read (replaced since it was listed; read again next time)")
            return None
        st = now
        if old is not None and (old.inode != st.st_ino or st.st_size < old.offset):
            old = None  # replaced or truncated: start over
        if old is not None and st.st_size == old.size and old.mtime == st.st_mtime:
            return old
        state = old if old is not None else FileState(inode=st.st_ino, size=0, offset=0, kind=kind)
        _read_windows(fd, state, st.st_size, kind, str(path), sparse)
    except (OSError, ValueError) as exc:
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        warnings.append(f"{path}: cannot read ({msg})")
        return None
    finally:
        os.close(fd)
    state.size = st.st_size
    state.mtime = st.st_mtime
    return state


def _read_windows(fd: int, state: FileState, size: int, kind: str, name: str, sparse: bool) -> None:
    """Fold ``fd``'s bytes from ``state.offset`` to ``size`` into ``state``, a window at a time.

    A start's text log beside its JSON log (``texttail``) is read at its two ends only: its first
    and last train lines and timestamps are all it is read for.
    """
    from prove_jobs.safe_read import windows

    start = state.offset
    spans = [(start, size)]
    if kind == "texttail" and sparse and size - start > 2 * LIMITS.window_bytes:
        spans = [(start, start + LIMITS.window_bytes), (size - LIMITS.window_bytes, size)]
    for index, (lo, hi) in enumerate(spans):
        if index:  # the tail window: from its first whole line
            head = os.pread(fd, LIMITS.window_bytes, lo)
            lo += head.find(b"\n") + 1 if b"\n" in head else len(head)
            state.tail_complete = False
        for window in windows(fd, lo, hi, LIMITS.window_bytes):
            if window.skipped is not None:
                at, length = window.skipped
                state.warnings.append(f"{name}: skipped a line of {length:,} bytes at byte {at} (over "
                                      f"{LIMITS.window_bytes:,}: not a log line)")
                state.tail_complete = False
            if window.data:
                final = window.final and hi == size
                data = window.data if final else window.data[: window.data.rfind(b"\n") + 1]
                chunk = parse_chunk(data, 0, len(data), kind, name, sparse, offset=window.start)
                say(LOGS, DEBUG, "read %s: bytes %d-%d (%d), %s", name, window.start, window.start + len(data),
                    len(data), chunk.how)
                state.add(chunk.records, chunk.complete)
                state.warnings.extend(chunk.warnings)
                if chunk.first_stamp is not None and state.first_stamp is None:
                    state.first_stamp = chunk.first_stamp
                state.last_stamp = chunk.last_stamp or state.last_stamp
                state.offset = chunk.offset
            else:
                state.offset = window.start
        if len(spans) > 1 and index == 0:
            state.offset = spans[1][0]


def parse_chunk(
    buf: Buffer, lo: int, hi: int, kind: str, name: str, sparse: bool, offset: int | None = None
) -> Sparse:
    offset = lo if offset is None else offset
    got = None
    if sparse and kind == "json" and isinstance(buf, bytes):
        got = sparse_json(buf, offset, name)
    elif sparse and kind in ("text", "texttail"):
        got = sparse_text(buf, lo, hi, offset, name, full=kind == "text")
    if got is not None:
        got.how = f"sparse {'json' if kind == 'json' else 'text'}"
        return got
    declined = sparse and kind != "json0" and hi - lo >= LIMITS.sparse_min_bytes
    data = buf if isinstance(buf, bytes) and lo == 0 and hi == len(buf) else bytes(buf[lo:hi])
    if kind in ("json", "json0"):
        c = parse_json_chunk(data, offset, name=name, fractions=kind == "json0")
    else:
        c = parse_text_chunk(data, offset, name=name)
    how = "line by line (not a clean log)" if declined else "line by line"
    return Sparse(list(c.records), c.offset, list(c.warnings), True, c.first_stamp, c.last_stamp, c.binary, how)


def read_all_train(path: Path | str, kind: str) -> list[TrainT]:
    """Every train record of a file, by a full parse (when a resume cuts deeper than the kept tail)."""
    from prove_jobs.safe_read import NotReadable, open_file, windows

    found: list[TrainT] = []
    try:
        fd, st = open_file(path, below=run_dir_of(str(path)))
    except (NotReadable, OSError):
        return found
    try:
        for window in windows(fd, 0, st.st_size, LIMITS.window_bytes):
            if kind in ("json", "json0"):
                records = parse_json_chunk(window.data, name=str(path), fractions=kind == "json0").records
            else:
                records = parse_text_chunk(window.data, name=str(path)).records
            found += [(r.iter, r.time) for r in records if r.kind == "train" and r.iter is not None]
    except OSError:
        return []
    finally:
        os.close(fd)
    return found


def first_line(path: Path | str) -> str:
    """A file's first line, short and printable, for a note on why it could not be read."""
    from prove_jobs.safe_read import NotReadable, open_file

    try:
        fd, _st = open_file(path, below=run_dir_of(str(path)))
    except (NotReadable, OSError) as exc:
        return str(exc) if isinstance(exc, NotReadable) else f"cannot read: {exc.strerror or exc}"
    try:
        head = os.pread(fd, 200, 0)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    finally:
        os.close(fd)
    line = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    return "empty" if not line else f"first line {ascii(line[:60])[1:-1]!r}"


def uncached(path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None) -> FileState | None:
    return read_file(path, kind, None, warnings, True, st)


def uncached_full(
    path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None
) -> FileState | None:
    return read_file(path, "text" if kind == "texttail" else kind, None, warnings, False, st)
