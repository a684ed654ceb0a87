"""Log records: one line of mmengine's JSON or text log, parsed.

Every parser takes the bytes of a file from an offset and returns the records and the new
offset, so the cache (``cache.py``) can re-read only what was appended.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from prove_jobs.logs.runlog import LIMITS, TAIL, Limits, RunLog, ValPoint

__all__ = ["LIMITS", "TAIL", "Chunk", "Limits", "Record", "RunLog", "ValPoint", "parse_json_chunk", "parse_text_chunk"]


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
    time: float | None = None  # seconds per iteration, the mean since the previous record
    loss: float | None = None
    data_time: float | None = None  # of `time`, seconds spent waiting for data
    lr: float | None = None
    memory: float | None = None  # MB: torch's peak allocated GPU memory (none on CPU)
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


class _Patterns:
    """The text log's regular expressions, compiled on first use: a warm ``status`` parses nothing."""

    def __init__(self) -> None:
        self.ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
        self.stamp = re.compile(r"^(?P<stamp>(?:\d{4}/)?\d{2}/\d{2} \d{2}:\d{2}:\d{2}) - \S+ - [A-Z]+ - (?P<msg>.*)$")
        # Iteration-based training only (mmseg 1.x): "Epoch(train) [1][ 50/270]" counts within an epoch.
        self.header = re.compile(r"^Iter\((?P<mode>train|val|test)\)\s*\[\s*(?P<cur>\d+)\s*/\s*(?P<tot>\d+)\]")
        self.eta = re.compile(r"eta: (?:\d+ days?, )?\d+:\d\d:\d\d(?:\.\d+)?")
        self.item = re.compile(
            r"(?:^|\s)(?P<key>[A-Za-z_][\w./-]*): (?P<val>[-+]?(?:nan|inf|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))(?=\s|$)"
        )
        self.saving = re.compile(r"^Saving checkpoint at (?P<n>\d+) iterations")


@functools.cache
def _patterns() -> _Patterns:
    return _Patterns()


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
    warnings += nonfinite_loss_warning(name, records)
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
    return Record("train", iter=it, time=seconds, loss=loss, data_time=_num(obj.get("data_time")),
                  lr=_num(obj.get("lr")), memory=_num(obj.get("memory")))


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
    warnings += nonfinite_loss_warning(name, records)
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
        return Record("ckpt", iter=int(saving["n"]), stamp=stamp)
    header = patterns.header.match(msg)
    if header is None:
        return None
    rest = patterns.eta.sub("", msg[header.end() :])
    items = {m["key"]: float(m["val"]) for m in patterns.item.finditer(rest)}
    if header["mode"] == "train":
        return Record(
            "train",
            iter=int(header["cur"]),
            max_iters=int(header["tot"]),
            time=items.get("time"),
            loss=items.get("loss"),
            data_time=items.get("data_time"),
            lr=items.get("lr"),
            memory=items.get("memory"),
            stamp=stamp,
        )
    if header["mode"] == "val":
        metrics = {attr: v for k, v in items.items() if (attr := _metric_key(k)) is not None}
        if metrics:
            return Record(
                "val", stamp=stamp, miou=metrics.get("miou"), aacc=metrics.get("aacc"), macc=metrics.get("macc")
            )
    return None
