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

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Chunk",
    "LogCache",
    "Record",
    "RunLog",
    "ValPoint",
    "parse_json_chunk",
    "parse_text_chunk",
    "read_run_log",
    "read_text_log",
]


@dataclass(frozen=True)
class ValPoint:
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
        text = raw.decode("utf-8", errors="replace")
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        match = _STAMP.match(text.rstrip("\r"))
        if match is None:
            continue
        stamp = match["stamp"]
        first_stamp = first_stamp or stamp
        last_stamp = stamp
        rec = _text_record(match["msg"], stamp)
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
# Reading files (whole or incrementally)


@dataclass
class _FileState:
    inode: int
    size: int
    offset: int
    records: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    first_stamp: str | None = None
    last_stamp: str | None = None
    mtime: float = 0.0


def _read_file(path: Path, kind: str, old: _FileState | None, warnings: list[str]) -> _FileState | None:
    """Parse ``path`` (``kind``: "json", "json0" or "text"), continuing from ``old`` when it still applies."""
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if old is not None and (old.inode != st.st_ino or st.st_size < old.offset):
                old = None  # replaced or truncated: start over
            if old is not None and st.st_size == old.size and old.mtime == st.st_mtime:
                return old
            start = old.offset if old is not None else 0
            fh.seek(start)
            data = fh.read()
    except OSError as exc:
        warnings.append(f"{path}: cannot read ({exc.strerror or exc})")
        return None
    if kind == "text":
        chunk = parse_text_chunk(data, start, name=str(path))
    else:
        chunk = parse_json_chunk(data, start, name=str(path), fractions=kind == "json0")
    state = old if old is not None else _FileState(inode=st.st_ino, size=0, offset=0)
    state.size = st.st_size
    state.mtime = st.st_mtime
    state.offset = chunk.offset
    state.records.extend(chunk.records)
    state.warnings.extend(chunk.warnings)
    if chunk.first_stamp is not None and state.first_stamp is None:
        state.first_stamp = chunk.first_stamp
    state.last_stamp = chunk.last_stamp or state.last_stamp
    return state


class LogCache:
    """Keeps per-file (inode, size, offset, parsed records) so a re-read parses only appended bytes."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], _FileState] = {}

    def _get(self, path: Path, kind: str, warnings: list[str]) -> _FileState | None:
        key = (str(path), kind)
        state = _read_file(path, kind, self._files.get(key), warnings)
        if state is None:
            self._files.pop(key, None)
        else:
            self._files[key] = state
        return state

    def read_run_log(self, work_dir: Path) -> RunLog:
        return _read_run_log(Path(work_dir), self._get)

    def read_text_log(self, path: Path) -> RunLog:
        return _read_text_log(Path(path), self._get)


def _uncached(path: Path, kind: str, warnings: list[str]) -> _FileState | None:
    return _read_file(path, kind, None, warnings)


# ---------------------------------------------------------------------------------------------
# Putting a run together


@dataclass
class _Start:
    """One training start: its train records and resolved val points, in order."""

    train: list[Record] = field(default_factory=list)
    vals: list[ValPoint] = field(default_factory=list)
    max_iters: int | None = None
    first_train_time: float | None = None
    unresolved_vals: int = 0


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


def _text_val_iters(records: list[Record]) -> list[int | None]:
    """Training iteration of each text val line: the last train line or checkpoint before it."""
    out: list[int | None] = []
    last: int | None = None
    for rec in records:
        if rec.kind in ("train", "ckpt") and rec.iter is not None:
            last = rec.iter if last is None else max(last, rec.iter)
        elif rec.kind == "val":
            out.append(last)
    return out


def _build_start(
    json_recs: list[Record] | None, text_recs: list[Record], year: int | None, legacy: bool = False
) -> _Start:
    start = _Start()
    text_train = [r for r in text_recs if r.kind == "train"]
    start.max_iters = next((r.max_iters for r in reversed(text_train) if r.max_iters), None)
    if text_train:
        start.first_train_time = _stamp_to_unix(text_train[0].stamp, year)
    text_val_iters = _text_val_iters(text_recs)
    if json_recs is None:
        start.train = text_train
        for rec, it in zip((r for r in text_recs if r.kind == "val"), text_val_iters, strict=False):
            if it is not None:
                start.vals.append(ValPoint(it, rec.miou, rec.aacc, rec.macc))
            else:
                start.unresolved_vals += 1
        return start
    json_vals = sum(1 for r in json_recs if r.kind == "val")
    # The text line of a val is written just before its JSON record: the k-th lines match when
    # the counts agree (or the text is one ahead).
    use_text = len(text_val_iters) in (json_vals, json_vals + 1)
    last_train: int | None = None
    k = 0
    for rec in json_recs:
        if rec.kind == "train":
            start.train.append(rec)
            if rec.iter is not None:
                last_train = rec.iter if last_train is None else max(last_train, rec.iter)
        elif rec.kind == "val":
            # `step` is the iteration (log_metric_by_epoch=False) or an epoch count, which is never
            # larger than the iteration: the largest lower bound is the iteration.
            # (mmseg 0.x: the val record's `iter` is the val dataloader length; its train record precedes it.)
            own = rec.iter if not (legacy and last_train) else None
            bounds = [b for b in (own, last_train, text_val_iters[k] if use_text else None) if b]
            k += 1
            if bounds:
                start.vals.append(ValPoint(max(bounds), rec.miou, rec.aacc, rec.macc))
            else:
                start.unresolved_vals += 1
    return start


def _merge(starts: list[_Start], n_starts: int, warnings: list[str], last_time: float | None) -> RunLog:
    curve: dict[int, ValPoint] = {}
    train: dict[int, Record] = {}
    max_iters: int | None = None
    first_time: float | None = None
    for st in starts:  # in start order: a later start overwrites
        for point in st.vals:
            curve[point.iter] = point
        if st.train:
            # A resumed start repeats the iterations after its checkpoint: its records replace them.
            resumed_at = min((r.iter for r in st.train if r.iter is not None), default=None)
            for it in [i for i in train if resumed_at is not None and i >= resumed_at]:
                del train[it]
        for rec in st.train:
            if rec.iter is not None:
                train[rec.iter] = rec
        max_iters = st.max_iters or max_iters
        if first_time is None:
            first_time = st.first_train_time
    last_iter = max(train) if train else None
    ordered = [train[i] for i in sorted(train)]
    times = [r.time for r in ordered[-5:] if r.time is not None and math.isfinite(r.time)]
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


_GetterType = Callable[[Path, str, list[str]], "_FileState | None"]


def _year_hint(path: Path) -> int | None:
    try:
        return time.localtime(path.stat().st_mtime).tm_year
    except OSError:
        return None


def _read_run_log(work_dir: Path, get: _GetterType) -> RunLog:
    warnings: list[str] = []
    try:
        entries = sorted(os.scandir(work_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return EMPTY
    except OSError as exc:
        return RunLog(None, None, (), 0, None, None, None, (f"{work_dir}: cannot list ({exc.strerror or exc})",))
    starts: list[_Start] = []
    n_starts = 0
    last_time: float | None = None
    for entry in entries:
        if entry.name.endswith(".log.json") and _is_file(entry):
            n_starts += 1
            state = get(Path(entry.path), "json0", warnings)
            if state is not None:
                warnings.extend(state.warnings)
                starts.append(_build_start(state.records, [], None, legacy=True))
    for entry in entries:
        if not (_TS_DIR.match(entry.name) and _is_dir(entry)):
            continue
        ts_dir = Path(entry.path)
        if _is_file(ts_dir / f"{entry.name}.json") and not _is_dir(ts_dir / "vis_data"):
            continue  # a Runner.test() run: <ts>/<ts>.json holds test metrics, not training
        n_starts += 1
        json_recs: list[Record] | None = None
        json_mtime: float | None = None
        for candidate in (ts_dir / "vis_data" / "scalars.json", ts_dir / "vis_data" / f"{entry.name}.json"):
            if _is_file(candidate):
                state = get(candidate, "json", warnings)
                if state is not None:
                    warnings.extend(state.warnings)
                    json_recs = state.records
                    json_mtime = state.mtime
                break
        text_recs: list[Record] = []
        stamp_time: float | None = None
        log_path = ts_dir / f"{entry.name}.log"
        if _is_file(log_path):
            state = get(log_path, "text", warnings)
            if state is not None:
                if json_recs is None:
                    warnings.extend(state.warnings)
                else:  # the JSON is what counts; the text only for times and iterations
                    warnings.extend(w for w in state.warnings if "binary" in w)
                text_recs = state.records
                stamp_time = _stamp_to_unix(state.last_stamp, None)
        if stamp_time is None:
            stamp_time = json_mtime  # no text log: when the JSON was last written
        if stamp_time is not None:
            last_time = stamp_time if last_time is None else max(last_time, stamp_time)
        start = _build_start(json_recs, text_recs, None)
        if start.unresolved_vals:
            warnings.append(
                f"{ts_dir.name}: {start.unresolved_vals} val record(s) without a training iteration skipped"
            )
        starts.append(start)
    return _merge(starts, n_starts, warnings, last_time)


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
    start = _build_start(None, state.records, year)
    last_time = _stamp_to_unix(state.last_stamp, year)
    mtime = state.mtime
    # A console timestamp has no year: the file's mtime year, or the one before if that is in the future.
    if year is not None and last_time is not None and last_time > mtime + 86400:
        start = _build_start(None, state.records, year - 1)
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
