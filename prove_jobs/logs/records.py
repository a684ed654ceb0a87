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
    # Epoch-based loops: the epoch (1-based) and the iterations per epoch (`[i/n]`'s n, in a text line); `iter`
    # is then the global iteration where the line gives n, else the iteration within the epoch (`by_epoch`).
    epoch: int | None = None
    per_epoch: int | None = None
    by_epoch: bool = False
    metric: str | None = None  # the name of the metric `miou` holds when not mIoU (mDice, mFscore)
    # kind "cfg": what a config dump says (the text log's head, a 0.x JSON log's first line)
    max_epochs: int | None = None
    eval_interval: int | None = None


_PERCENT = Real(0.0, 100.0, optional=True)
LOG_FIELDS: dict[str, Spec] = {
    "iter": Whole(0, MAX_ITERS, optional=True), "max_iters": Whole(1, MAX_ITERS, optional=True),
    "time": Real(0.0, MAX_SECONDS, optional=True), "data_time": Real(0.0, MAX_SECONDS, optional=True),
    # NaN and infinity are what a diverged training logs: kept, and warned about (nonfinite_loss_warning)
    "loss": Real(-1e300, 1e300, optional=True, finite=False), "lr": Real(0.0, 1e3, optional=True),
    "memory": Real(0.0, 1e9, optional=True), "miou": _PERCENT, "aacc": _PERCENT, "macc": _PERCENT,
    "epoch": Whole(0, MAX_ITERS, optional=True), "per_epoch": Whole(1, MAX_ITERS, optional=True),
    "max_epochs": Whole(1, MAX_ITERS, optional=True), "eval_interval": Whole(1, MAX_ITERS, optional=True),
}
"""Every value a log record carries, its type and its range: one out of it is left out of the record (a
record without its iteration is left out whole), and its file's warning names the field."""
_FRACTION = Real(0.0, 1.0, optional=True)  # mmseg 0.x's metrics, before they are made percent
_LABELS = {"miou": "mIoU", "aacc": "aAcc", "macc": "mAcc"}


def checked_record(kind: str, values: Mapping[str, object], *, stamp: str | None = None,
                   fractions: bool = False, **plain: object) -> Record:
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
    return Record(kind, stamp=stamp, rejected=tuple(rejected), **kept, **plain)  # type: ignore[arg-type]


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
        # mmengine: `2024/01/02 10:00:00 - mmengine - INFO - ` (a console copy: no year);
        # mmcv 1.x (mmseg 0.x), file and console alike: `2021-08-03 12:00:00,123 - mmseg - INFO - `
        self.stamp = re.compile(r"^(?:(?P<stamp>(?:\d{4}/)?\d{2}/\d{2} \d{2}:\d{2}:\d{2})"
                                r"|(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2}) (?P<t>\d{2}:\d{2}:\d{2})(?:,\d{1,6})?)"
                                r" - \S+ - [A-Z]+ - (?P<msg>.*)$")
        # mmengine: `Iter(train) [ 50/80000]`, `Epoch(train)  [3][ 50/300]`, `Iter(val) [500/500]`,
        # `Epoch(val) [3][500/500]`; mmcv: `Iter [50/80000]`, `Epoch [1][50/300]`, `Iter(val) [8000]`,
        # `Epoch(val) [1][500]`. At most 4,000 digits: int() of over 4,300 raises ValueError; LOG_FIELDS then
        # says the number is too big.
        self.header = re.compile(
            r"^(?P<loop>Iter|Epoch)(?:\((?P<mode>train|val|test)\))?\s*(?:\[\s*(?P<ep>\d{1,4000})\s*\])?"
            r"\s*\[\s*(?P<cur>\d{1,4000})\s*(?:/\s*(?P<tot>\d{1,4000})\s*)?\]")
        self.eta = re.compile(r"eta: (?:\d+ days?, )?\d+:\d\d:\d\d(?:\.\d+)?")
        self.item = re.compile(
            r"(?:^|[\s,])(?P<key>[A-Za-z_][\w./-]*): (?P<val>[-+]?(?:nan|inf|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))"
            r"(?=[\s,]|$)"
        )
        self.saving = re.compile(r"^Saving checkpoint at (?P<n>\d{1,4000}) (?P<unit>iterations|epochs)")
        # A config dump (the text log's head, a 0.x JSON log's first line): what the run was planned to do
        self.cfg = {
            "max_iters": re.compile(r"(?:\bmax_iters\s*=\s*|^total_iters\s*=\s*)(\d{1,9})\b", re.M),
            "max_epochs": re.compile(r"(?:\bmax_epochs\s*=\s*|^total_epochs\s*=\s*)(\d{1,9})\b", re.M),
            "eval_interval": re.compile(r"^evaluation\s*=\s*dict\((?:[^()]|\([^()]*\))*?\binterval\s*=\s*(\d{1,9})\b",
                                        re.M),
        }
        # mmengine "resumed epoch: 0, iter: 8000"; mmcv 0.x "resumed from epoch: 1, iter 8000" (IterBasedRunner),
        # "resumed epoch 1, iter 8000"
        self.resumed = re.compile(r"^resumed (?:from )?epoch:? \d{1,9}, iter:? (?P<n>\d{1,4000})")


@functools.cache
def _patterns() -> _Patterns:
    return _Patterns()


CFG_TAGS = (b"max_iters", b"max_epochs", b"total_iters", b"total_epochs", b"evaluation")


def config_record(text: str) -> Record | None:
    """What a config dump says of the plan: max iterations or epochs, the 0.x eval interval; None: nothing."""
    found = {name: int(m[1]) for name, pattern in _patterns().cfg.items() if (m := pattern.search(text))}
    return checked_record("cfg", found) if found else None


# The metrics a val record is read for, by name (with or without a dataset prefix: `citys_mIoU`,
# `cityscapes/mIoU`, `val/mIoU`); the first of MAIN a record has is its curve's metric.
_METRICS = {"mIoU": "miou", "aAcc": "aacc", "mAcc": "macc", "mDice": "mDice", "mFscore": "mFscore"}
MAIN = ("mIoU", "mDice", "mFscore")


def _metric_key(key: str) -> str | None:
    """``mIoU``, ``val/mIoU`` (log_with_hierarchy), ``prefix/mIoU`` or ``citys_mIoU`` -> its name (``mIoU``)."""
    last = key.rsplit("/", 1)[-1]
    if last in _METRICS:
        return last
    head, _, tail = last.rpartition("_")
    return tail if head and tail in _METRICS else None


def metric_values(items: Mapping[str, object]) -> tuple[dict[str, object], str | None]:
    """The metrics among ``items`` as record fields (miou: the main metric), and the main metric's name when
    it is not mIoU."""
    found: dict[str, object] = {}
    for key, value in items.items():
        name = _metric_key(key)
        if name is not None and name not in found:
            found[name] = value
    fields: dict[str, object] = {_METRICS[n]: found[n] for n in ("aAcc", "mAcc") if n in found}
    main = next((n for n in MAIN if n in found), None)
    if main is not None:
        fields["miou"] = found[main]
    return fields, (main if main not in (None, "mIoU") else None)


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
    """The record a JSON log line holds, its values checked (``LOG_FIELDS``); ``None``: not a train or val record.

    mmengine's train records carry ``iter`` (the global iteration; old versions only ``step``) and ``lr``; its val
    records neither (``step``: the iteration, or the epoch with ``log_metric_by_epoch``). A val record without a
    metric read here (``accuracy/top1``, ``coco/bbox_mAP``) is no record, never a train one. mmseg 0.x's records
    say their ``mode``; its first line is the run's meta (``config``: what the run was planned to do).
    """
    mode = obj.get("mode")
    if mode is None and isinstance(obj.get("config"), str) and "iter" not in obj:
        return config_record(str(obj["config"]))
    metrics, metric = metric_values(obj)
    epoch = obj.get("epoch")
    if mode == "val" or (mode is None and metrics):
        if not metrics:
            return None
        return checked_record("val", {"iter": obj.get("iter") if fractions else obj.get("step"), **metrics,
                                      "epoch": epoch if fractions else None}, fractions=fractions, metric=metric)
    if mode not in (None, "train"):
        return None
    it = obj.get("iter")
    it = obj.get("step") if it is None else it
    loss = obj.get("loss")
    loss = obj.get("train/loss") if loss is None else loss
    lr = obj.get("lr")
    lr = obj.get("train/lr") if lr is None else lr
    if isinstance(lr, dict):  # mmcv: one per optimizer
        lr = next(iter(lr.values()), None)
    if it is None or (mode is None and "iter" not in obj and lr is None and loss is None):
        return None
    if loss is None and lr is None and "time" not in obj:
        return None
    seconds = obj.get("time")
    seconds = obj.get("train/time") if seconds is None else seconds
    rec = checked_record("train", {"iter": it, "time": seconds, "loss": loss, "data_time": obj.get("data_time"),
                                   "lr": lr, "memory": obj.get("memory"), "epoch": epoch},
                         by_epoch=mode is None and epoch is not None)
    return _placed(rec)


def parse_text_chunk(data: bytes, offset: int = 0, *, name: str = "") -> Chunk:
    """Parse a text log's bytes (mmengine's ``<ts>.log``, mmcv's, or a job's console copy) from ``offset``."""
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
            if rec is not None:  # a config line
                records.append(rec)
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
    """One text log line (without its newline, no NUL bytes) -> (its timestamp, its record); a line of a
    config dump (no timestamp) -> (None, its "cfg" record)."""
    text = raw.decode("utf-8", errors="replace")
    if "\x1b" in text:
        text = _patterns().ansi.sub("", text)
    match = _patterns().stamp.match(text.rstrip("\r"))
    if match is None:
        if any(tag in raw for tag in CFG_TAGS) and "=" in text:
            return None, config_record(text)
        return None, None
    stamp = match["stamp"] or f"{match['y']}/{match['mo']}/{match['d']} {match['t']}"
    return stamp, _text_record(match["msg"], stamp)


def _text_record(msg: str, stamp: str) -> Record | None:
    patterns = _patterns()
    saving = patterns.saving.match(msg)
    if saving:
        if saving["unit"] == "epochs":
            return checked_record("ckpt", {"epoch": int(saving["n"])}, stamp=stamp, by_epoch=True)
        return _placed(checked_record("ckpt", {"iter": int(saving["n"])}, stamp=stamp))
    if msg.startswith(("Iter(test)", "Epoch(test)")):
        return Record("test", stamp=stamp)
    header = patterns.header.match(msg)
    if header is None:
        resumed = patterns.resumed.match(msg)
        return _placed(checked_record("resume", {"iter": int(resumed["n"])}, stamp=stamp)) if resumed else None
    mode, epoch, cur, tot = header["mode"] or "train", header["ep"], int(header["cur"]), header["tot"]
    mmcv = header["mode"] is None or tot is None  # mmcv 1.x's TextLoggerHook (mmseg 0.x): metrics as fractions
    by_epoch = header["loop"] == "Epoch"
    if by_epoch and mode != "test" and epoch is None:
        return None
    rest = patterns.eta.sub("", msg[header.end() :])
    items = {m["key"]: float(m["val"]) for m in patterns.item.finditer(rest)}
    if mode == "train" and tot is not None:
        lr = items.get("lr", next((v for k, v in items.items() if k.startswith("lr_")), None))
        values: dict[str, object] = {"time": items.get("time"), "loss": items.get("loss"),
                                     "data_time": items.get("data_time"), "lr": lr, "memory": items.get("memory")}
        if by_epoch:  # `[e][i/n]`: the i-th of n iterations of epoch e
            n = int(tot)
            values.update(iter=(int(epoch) - 1) * n + cur if int(epoch) >= 1 else None, epoch=int(epoch),
                          per_epoch=n)
        else:
            values.update(iter=cur, max_iters=int(tot))
        return _placed(checked_record("train", values, stamp=stamp, by_epoch=by_epoch))
    if mode == "val":
        metrics, metric = metric_values(items)
        if not metrics and by_epoch and epoch is not None and (mmcv or cur == int(tot or 0)) and items:
            # an epoch's val with metrics read no further (accuracy, bbox_mAP): the epoch ended
            return checked_record("ckpt", {"epoch": int(epoch)}, stamp=stamp, by_epoch=True)
        if metrics:
            # mmcv's `Iter(val) [8000]`: the training iteration in mmcv before 1.3.4, the val loader's length after
            own = cur if mmcv and not by_epoch else None
            return checked_record("val", {**metrics, "iter": own, "epoch": int(epoch) if by_epoch else None},
                                  stamp=stamp, fractions=mmcv, metric=metric, by_epoch=by_epoch)
    return None


def _placed(record: Record) -> Record:
    """A train or checkpoint record without a usable iteration has no place on the curve: its warning only."""
    return record if record.iter is not None else replace(record, kind="none")
