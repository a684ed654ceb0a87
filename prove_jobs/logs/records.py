"""Log records: one line of mmengine's JSON or text log, parsed.

Every parser takes the bytes of a file from an offset and returns the records and the new
offset, so the cache (``cache.py``) can re-read only what was appended.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from prove_jobs.logs.runlog import LIMITS, TAIL, Limits, RunLog, ValPoint
from prove_jobs.values import MAX_ITERS, MAX_SECONDS, Real, Spec, Whole, checked, problem

__all__ = ["LIMITS", "TAIL", "Chunk", "Limits", "Record", "RunLog", "ValPoint", "parse_json_chunk", "parse_text_chunk"]


@dataclass(frozen=True)
class Record:
    """One parsed log record, before val iterations are resolved.

    kind: "train", "val", "ckpt" ("Saving checkpoint at N iterations"), "resume" ("resumed epoch: E, iter: N":
    where a start resumed) or "test" (an ``Iter(test)`` line: a ``Runner.test()`` start).
    iter: train: the training iteration; ckpt, resume: N; val: JSON ``step`` (1.x) or ``iter`` (0.x),
    which may not be the training iteration; None for a text val line.
    """

    kind: str
    iter: int | None = None
    max_iters: int | None = None
    time: float | None = None  # seconds per iteration, the mean since the previous record
    loss: float | None = None
    data_time: float | None = None  # of `time`, seconds spent waiting for data
    lr: float | None = None
    memory: float | None = None  # MB: torch's peak allocated GPU memory (none on CPU)
    miou: float | None = None
    aacc: float | None = None
    macc: float | None = None
    stamp: str | None = None
    rejected: tuple[tuple[str, str], ...] = ()  # (field, why) of each value left out: out of its type or range


_PERCENT = Real(0.0, 100.0, optional=True)
LOG_FIELDS: dict[str, Spec] = {
    "iter": Whole(0, MAX_ITERS, optional=True), "max_iters": Whole(1, MAX_ITERS, optional=True),
    "time": Real(0.0, MAX_SECONDS, optional=True), "data_time": Real(0.0, MAX_SECONDS, optional=True),
    # NaN and infinity are what a diverged training logs: kept, and warned about (nonfinite_loss_warning)
    "loss": Real(-1e300, 1e300, optional=True, finite=False), "lr": Real(0.0, 1e3, optional=True),
    "memory": Real(0.0, 1e9, optional=True), "miou": _PERCENT, "aacc": _PERCENT, "macc": _PERCENT,
}
"""Every value a log record carries, its type and its range: one out of it is left out of the record (a
record without its iteration is left out whole), and its file's warning names the field."""
_FRACTION = Real(0.0, 1.0, optional=True)  # mmseg 0.x's metrics, before they are made percent
_LABELS = {"miou": "mIoU", "aacc": "aAcc", "macc": "mAcc"}


def checked_record(kind: str, values: Mapping[str, object], *, stamp: str | None = None,
                   fractions: bool = False) -> Record:
    """A record of the ``values`` that fit ``LOG_FIELDS`` (``fractions``: metrics as 0.x's fractions, made
    percent), and the fields left out, with why, in ``rejected``."""
    kept: dict[str, object] = {}
    rejected: list[tuple[str, str]] = []
    for name, value in values.items():
        spec = _FRACTION if fractions and name in _LABELS else LOG_FIELDS[name]
        why = problem(spec, value)
        if why is not None:
            rejected.append((name, why))
        elif value is not None:
            found = checked(spec, value)
            kept[name] = round(found * 100.0, 10) if fractions and name in _LABELS else found  # type: ignore[operator]
    return Record(kind, stamp=stamp, rejected=tuple(rejected), **kept)  # type: ignore[arg-type]


def rejected_warnings(name: str, records: Sequence[Record]) -> list[str]:
    """One warning per field some records had out of type or range: ``unreadable: lr in FILE (why)``."""
    seen: dict[str, tuple[str, int]] = {}
    for record in records:
        for field, why in record.rejected:
            first, count = seen.get(field, (why, 0))
            seen[field] = (first, count + 1)
    return [f"unreadable: {_LABELS.get(field, field)} in {name} ({why}{f'; {count} records' if count > 1 else ''}): "
            "left out" for field, (why, count) in seen.items()]


@dataclass(frozen=True)
class Chunk:
    """What one read of a file gave: records, the offset after the last complete line, warnings."""

    records: tuple[Record, ...]
    offset: int
    warnings: tuple[str, ...]
    first_stamp: str | None = None  # first / last timestamped text line in this chunk
    last_stamp: str | None = None
    binary: bool = False


class _Patterns:
    """The text log's regular expressions, compiled on first use: a warm ``status`` parses nothing."""

    def __init__(self) -> None:
        self.ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
        self.stamp = re.compile(r"^(?P<stamp>(?:\d{4}/)?\d{2}/\d{2} \d{2}:\d{2}:\d{2}) - \S+ - [A-Z]+ - (?P<msg>.*)$")
        # Iteration-based training only (mmseg 1.x): "Epoch(train) [1][ 50/270]" counts within an epoch.
        # at most 4,000 digits: int() of over 4,300 raises ValueError; LOG_FIELDS then says the number is too big
        self.header = re.compile(
            r"^Iter\((?P<mode>train|val|test)\)\s*\[\s*(?P<cur>\d{1,4000})\s*/\s*(?P<tot>\d{1,4000})\]")
        self.eta = re.compile(r"eta: (?:\d+ days?, )?\d+:\d\d:\d\d(?:\.\d+)?")
        self.item = re.compile(
            r"(?:^|\s)(?P<key>[A-Za-z_][\w./-]*): (?P<val>[-+]?(?:nan|inf|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))(?=\s|$)"
        )
        self.saving = re.compile(r"^Saving checkpoint at (?P<n>\d{1,4000}) iterations")
        # mmengine "resumed epoch: 0, iter: 8000"; mmcv 0.x "resumed from epoch: 1, iter 8000" (IterBasedRunner),
        # "resumed epoch 1, iter 8000"
        self.resumed = re.compile(r"^resumed (?:from )?epoch:? \d{1,9}, iter:? (?P<n>\d{1,4000})")


@functools.cache
def _patterns() -> _Patterns:
    return _Patterns()


_METRICS = {"mIoU": "miou", "aAcc": "aacc", "mAcc": "macc"}


def _metric_key(key: str) -> str | None:
    """``mIoU``, ``val/mIoU`` (log_with_hierarchy) or ``prefix/mIoU`` -> ``miou``."""
    return _METRICS.get(key.rsplit("/", 1)[-1])


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
            if final_json and tail.strip().startswith(b"{") and json_dict(tail) is not None:
                lines.append((offset + pos, tail))
                pos = len(data)
            break
        lines.append((offset + pos, data[pos:end]))
        pos = end + 1
    return lines, offset + pos


def json_dict(line: bytes) -> dict[str, object] | None:
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
    for line_offset, line in lines:
        if not line.strip():
            continue
        obj = json_dict(line)
        if obj is None:
            bad += 1
            first_bad = line_offset if first_bad is None else first_bad
            continue
        rec = json_record(obj, fractions)
        if rec is not None:
            records.append(rec)
    warnings: list[str] = []
    if bad:
        warnings.append(f"{name}: skipped {bad} unparsable line(s) (first at byte {first_bad})")
    warnings += nonfinite_loss_warning(name, records) + rejected_warnings(name, records)
    return Chunk(tuple(records), new_offset, tuple(warnings))


def nonfinite_loss_warning(name: str, records: Sequence[Record]) -> list[str]:
    """The warning for train records whose loss is NaN or infinite (the training diverged there)."""
    bad = [r.iter if r.iter is not None else -1 for r in records
           if r.kind == "train" and r.loss is not None and not math.isfinite(r.loss)]
    return [f"{name}: non-finite loss at iteration(s) {iter_list(bad)}"] if bad else []


def iter_list(iters: list[int]) -> str:
    shown = ", ".join(str(i) for i in iters[:5])
    return shown + (f" and {len(iters) - 5} more" if len(iters) > 5 else "")


def json_record(obj: dict[str, object], fractions: bool) -> Record | None:
    """The record a JSON log line holds, its values checked (``LOG_FIELDS``); ``None``: not a train or val record."""
    mode = obj.get("mode")
    metrics: dict[str, object] = {}
    for key, value in obj.items():
        attr = _METRICS.get(key)
        if attr is None and "/" in key:
            attr = _metric_key(key)
        if attr is not None and attr not in metrics:
            metrics[attr] = value
    if mode == "val" or (mode is None and metrics):
        if not metrics:
            return None
        return checked_record("val", {"iter": obj.get("iter") if fractions else obj.get("step"), **metrics},
                              fractions=fractions)
    if mode not in (None, "train"):
        return None
    it = obj.get("iter")
    it = obj.get("step") if it is None else it
    loss = obj.get("loss")
    loss = obj.get("train/loss") if loss is None else loss
    if it is None or (loss is None and "lr" not in obj and "time" not in obj):
        return None
    seconds = obj.get("time")
    seconds = obj.get("train/time") if seconds is None else seconds
    rec = checked_record("train", {"iter": it, "time": seconds, "loss": loss, "data_time": obj.get("data_time"),
                                   "lr": obj.get("lr"), "memory": obj.get("memory")})
    return _placed(rec)


def parse_text_chunk(data: bytes, offset: int = 0, *, name: str = "") -> Chunk:
    """Parse mmengine text log bytes (the ``<ts>.log`` file or a job's console copy) from ``offset``."""
    lines, new_offset = _split_lines(data, offset, final_json=False)
    records: list[Record] = []
    first_stamp: str | None = None
    last_stamp: str | None = None
    binary = False
    for _line_offset, raw in lines:
        if b"\x00" in raw:
            binary = True
            continue
        stamp, rec = text_line(raw)
        if stamp is None:
            continue
        first_stamp = first_stamp or stamp
        last_stamp = stamp
        if rec is not None:
            records.append(rec)
    warnings: list[str] = []
    if binary:
        warnings.append(f"{name}: skipped binary data (NUL bytes)")
    warnings += nonfinite_loss_warning(name, records) + rejected_warnings(name, records)
    return Chunk(tuple(records), new_offset, tuple(warnings), first_stamp, last_stamp, binary)


def text_line(raw: bytes) -> tuple[str | None, Record | None]:
    """One text log line (without its newline, no NUL bytes) -> (its timestamp, its record)."""
    text = raw.decode("utf-8", errors="replace")
    if "\x1b" in text:
        text = _patterns().ansi.sub("", text)
    match = _patterns().stamp.match(text.rstrip("\r"))
    if match is None:
        return None, None
    stamp = match["stamp"]
    return stamp, _text_record(match["msg"], stamp)


def _text_record(msg: str, stamp: str) -> Record | None:
    patterns = _patterns()
    saving = patterns.saving.match(msg)
    if saving:
        return _placed(checked_record("ckpt", {"iter": int(saving["n"])}, stamp=stamp))
    if msg.startswith(("Iter(test)", "Epoch(test)")):
        return Record("test", stamp=stamp)
    header = patterns.header.match(msg)
    if header is None:
        resumed = patterns.resumed.match(msg)
        return _placed(checked_record("resume", {"iter": int(resumed["n"])}, stamp=stamp)) if resumed else None
    rest = patterns.eta.sub("", msg[header.end() :])
    items = {m["key"]: float(m["val"]) for m in patterns.item.finditer(rest)}
    if header["mode"] == "train":
        return _placed(checked_record("train", {
            "iter": int(header["cur"]), "max_iters": int(header["tot"]), "time": items.get("time"),
            "loss": items.get("loss"), "data_time": items.get("data_time"), "lr": items.get("lr"),
            "memory": items.get("memory")}, stamp=stamp))
    if header["mode"] == "val":
        metrics = {attr: v for k, v in items.items() if (attr := _metric_key(k)) is not None}
        if metrics:
            return checked_record("val", metrics, stamp=stamp)
    return None


def _placed(record: Record) -> Record:
    """A train or checkpoint record without a usable iteration has no place on the curve: its warning only."""
    return record if record.iter is not None else replace(record, kind="none")
