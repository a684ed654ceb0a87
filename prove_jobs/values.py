"""Values read from the shared data root, checked where they are read.

Anyone in the group can write a run's files. A value of the wrong type or out of range (an
iteration of 400 digits, NaN, a boolean where a count belongs, JSON nested 100,000 deep) must make
that one file (for a log: that one value) unreadable, with one line naming the field and the file,
and never reach arithmetic, formatting or a table, where it raised OverflowError, ValueError or
ZeroDivisionError for everyone who looked. So each file kind has one table of its fields and one
function that checks a parsed document against it: ``prove_run.json`` and ``prove_conflicts.json``
here, the logs' records in ``logs/records.py``, the recorded configs in ``report/trained.py``.

Standard library only, and cheap to import: ``status`` reads every run's metadata through it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from prove_jobs.errors import UnreadableValue

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MAX_ITERS = 999_999_999  # a billion iterations is no training; the log scanners' regexes read at most 9 digits
MAX_SECONDS = 1e7  # per iteration (four months): a log's `time` and `data_time`
MAX_UNIX_TIME = 1e11  # the year 5138: a timestamp past it is not one
MAX_COUNT = 1_000_000  # starts, restarts, attempts, GPUs
MAX_PID = 1 << 22  # the kernel's pid_max ceiling
NAME = 255  # a file name, a user, a host, a job id
PATH = 4096  # PATH_MAX
MESSAGE = 1 << 16  # a recorded error message


@dataclass(frozen=True)
class Whole:
    """A whole number in [low, high] (never a boolean, never a fraction)."""

    low: int
    high: int
    optional: bool = False


@dataclass(frozen=True)
class Real:
    """A number in [low, high]; ``finite=False`` also lets NaN and infinity through (a diverged loss)."""

    low: float
    high: float
    optional: bool = False
    finite: bool = True


@dataclass(frozen=True)
class Text:
    """A string of at most ``longest`` characters; one of ``choices`` when they are given."""

    longest: int
    optional: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Flag:
    """true or false."""

    optional: bool = False


Spec = Whole | Real | Text | Flag


def kind_of(value: object) -> str:
    """What a JSON value is, in a message's words (never the value itself: it is anyone's text)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"a number of {digits(value)} digits" if abs(value) >= 10**15 else "a whole number"
    if isinstance(value, float):
        return "not a number" if value != value else ("infinite" if math.isinf(value) else "a fraction")
    return {str: "text", list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def digits(value: int) -> int:
    """How many decimal digits ``value`` has (over 4,300 of them ``str()`` raises ValueError: estimated)."""
    if value.bit_length() <= 14_000:  # at most 4,215 digits
        return len(str(abs(value)))
    return int(abs(value).bit_length() * 0.30103) + 1


def problem(spec: Spec, value: object) -> str | None:
    """Why ``value`` does not fit ``spec``; ``None`` when it does."""
    if value is None:
        return None if spec.optional else "null where a value is needed"
    if isinstance(spec, Flag):
        return None if isinstance(value, bool) else f"{kind_of(value)}, not true or false"
    if isinstance(spec, Text):
        if not isinstance(value, str):
            return f"{kind_of(value)}, not text"
        if len(value) > spec.longest:
            return f"text of {len(value)} characters, over {spec.longest}"
        if spec.choices and value not in spec.choices:
            return f"not one of {', '.join(spec.choices)}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{kind_of(value)}, not a number"
    if isinstance(spec, Whole) and not isinstance(value, int):
        return f"{kind_of(value)}, not a whole number"
    if isinstance(value, float) and not math.isfinite(value):
        return None if isinstance(spec, Real) and not spec.finite else kind_of(value)
    if isinstance(value, int) and abs(value) >= 10**15 and not spec.low <= value <= spec.high:
        return f"{kind_of(value)}, out of range"
    if not spec.low <= value <= spec.high:  # an int against float bounds compares exactly, never overflows
        return f"{value:g} out of range [{spec.low:g}, {spec.high:g}]"
    return None


def checked(spec: Spec, value: object) -> object:
    """``value`` as its field holds it (a Real's whole number as a float); ``None`` when it does not fit."""
    if problem(spec, value) is not None or value is None:
        return None
    return float(value) if isinstance(spec, Real) and isinstance(value, int) else value


def parse_json(raw: bytes | str) -> object:
    """``raw`` parsed; ``ValueError`` for anything that is not bounded JSON (nesting too deep, a number of
    over 4,300 digits, bad UTF-8): a planted document is one bad file, not a RecursionError."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deep") from None


def fields_from(document: object, specs: Mapping[str, Spec], path: object, *, required: tuple[str, ...] = (),
                prefix: str = "") -> dict[str, object]:
    """The fields of a JSON object that ``specs`` knows, each checked (a Real's whole number as a float);
    ``UnreadableValue`` naming the first that does not fit. Unknown keys (a newer prove-jobs) are left out."""
    if not isinstance(document, dict):
        raise UnreadableValue(prefix.rstrip(".") or "the document", path, f"{kind_of(document)}, not an object")
    for name in required:
        if name not in document:
            raise UnreadableValue(prefix + name, path, "missing")
    found: dict[str, object] = {}
    for name, spec in specs.items():
        if name in document:
            why = problem(spec, document[name])
            if why is not None:
                raise UnreadableValue(prefix + name, path, why)
            found[name] = checked(spec, document[name])
    return found


def finite_json(value: object, why: str = "not a number") -> object:
    """A JSON document with every NaN or infinity replaced by null, and ``<key>_note`` beside it saying why:
    what ``--json`` writes must parse with a strict parser (``json.loads(..., parse_constant=...)`` refusing NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [finite_json(item, why) for item in value]
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out[key] = finite_json(item, why)
            if isinstance(item, float) and not math.isfinite(item) and f"{key}_note" not in value:
                out[f"{key}_note"] = kind_of(item)
        return out
    return value


def finite_document(document: dict[str, Any]) -> dict[str, Any]:
    """:func:`finite_json` of a JSON object; one that has no NaN nor infinity as it is. json's C encoder, which
    refuses them, tells which: a tenth of the walk's time (a second of a 10,000-run ``status --json``)."""
    try:
        json.dumps(document, allow_nan=False)
    except (ValueError, TypeError):  # one to replace (or a value the walk leaves to the writer)
        pass
    else:
        return document
    found = finite_json(document)
    assert isinstance(found, dict)
    return found


# --- prove_run.json ------------------------------------------------------------------------------------

_WHEN = Real(0.0, MAX_UNIX_TIME, optional=True)
META_FIELDS: dict[str, Spec] = {
    "model": Text(NAME), "variant": Text(NAME), "sweep_file": Text(PATH), "config_hash": Text(NAME),
    "executor": Text(NAME), "job_id": Text(NAME, optional=True), "user": Text(NAME), "host": Text(NAME),
    "pid": Whole(0, MAX_PID, optional=True), "submitted_at": _WHEN, "started_at": _WHEN, "finished_at": _WHEN,
    "failed_at": _WHEN, "cancelled_at": _WHEN, "cancelled_by": Text(NAME, optional=True), "token": Text(NAME),
    "layout": Text(NAME), "nodes": Text(NAME), "gpus": Whole(0, MAX_COUNT, optional=True),
    "starts": Whole(0, MAX_COUNT),
    "seed": Whole(0, (1 << 64) - 1, optional=True), "pid_start": Whole(0, (1 << 63) - 1, optional=True),
    "job_start": Whole(0, (1 << 63) - 1, optional=True), "boot_id": Text(NAME, optional=True),
    "released_at": _WHEN, "released_by": Text(NAME, optional=True), "error": Text(MESSAGE, optional=True),
    "lost_start": Text(MESSAGE, optional=True),
    "max_iters": Whole(1, MAX_ITERS, optional=True), "attempts": Whole(0, MAX_COUNT),
    "restarts": Whole(0, MAX_COUNT), "requeued_at": _WHEN, "lock_mode": Text(NAME, choices=("fcntl", "soft")),
}
"""Every field of :class:`~prove_jobs.metadata.RunMeta`, its type and its range (a test keeps the two in step)."""


def meta_fields(document: object, path: object) -> dict[str, object]:
    """The checked fields of a parsed ``prove_run.json``; ``UnreadableValue`` for the first that does not fit."""
    return fields_from(document, META_FIELDS, path, required=("model", "variant"))


# --- prove_conflicts.json ------------------------------------------------------------------------------

HOLDER_FIELDS: dict[str, Spec] = {
    "user": Text(NAME), "host": Text(NAME), "executor": Text(NAME), "job_id": Text(NAME, optional=True),
    "pid": Whole(0, MAX_PID, optional=True), "since": _WHEN, "sweep": Text(PATH), "stale": Flag(),
}
CONFLICT_FIELDS: dict[str, Spec] = {
    "at": _WHEN, "sweep": Text(PATH), "queued_job_id": Text(NAME, optional=True),
    "after_job_id": Text(NAME, optional=True),
}


def conflict_fields(entry: object, path: object, user: str) -> dict[str, object]:
    """One user's checked entry of ``prove_conflicts.json``: its fields, and ``holder`` as a checked object."""
    where = f"{user}."
    found = fields_from(entry, CONFLICT_FIELDS, path, required=("holder",), prefix=where)
    assert isinstance(entry, dict)  # fields_from refused anything else
    found["holder"] = fields_from(entry["holder"], HOLDER_FIELDS, path, prefix=f"{where}holder.")
    return found
