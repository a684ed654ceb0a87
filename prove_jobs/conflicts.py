"""Recorded conflicts, ``prove_conflicts.json``: where a user's submit met someone else's claim on a run, for
``status`` and ``resubmit --lock-conflicts`` (and the job it queued behind the holder's, ``--after-holder``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from prove_jobs.claims import LockHolder
from prove_jobs.errors import UnreadableValue
from prove_jobs.fsafe import atomic_write_text
from prove_jobs.identity import current_user
from prove_jobs.metadata import locked, now
from prove_jobs.runs import CONFLICTS_FILE
from prove_jobs.values import parse_json

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


@dataclass(frozen=True)
class Conflict:
    """One user's recorded conflict on a run: whom their submit met, when, from which sweep, and the job of theirs
    queued behind the holder's (``--after-holder``), if any."""

    holder: LockHolder
    at: float | None
    sweep: str = ""
    queued_job_id: str | None = None
    after_job_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"holder": self.holder.to_json(), "at": self.at, "sweep": self.sweep}
        if self.after_job_id is not None:
            entry.update(queued_job_id=self.queued_job_id, after_job_id=self.after_job_id)
        return entry

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Conflict:
        """From an entry whose fields were checked (``values.conflict_fields``)."""
        return cls(holder=LockHolder.from_json(entry["holder"]), at=entry.get("at"), sweep=str(entry.get("sweep", "")),
                   queued_job_id=entry.get("queued_job_id"), after_job_id=entry.get("after_job_id"))


def record_conflict(run_dir: Path, holder: LockHolder, sweep: str, *, user: str | None = None) -> None:
    """Remember that ``user``'s (this user's) submit met ``holder``, for ``status`` and ``resubmit --lock-conflicts``.

    Read, changed and rewritten under the run's mutex: several users meeting one holder at once
    all stay on record.
    """
    user = user or current_user()
    with locked(run_dir):
        conflicts = read_conflicts(run_dir)
        entry = Conflict(holder, now(), sweep)
        previous = conflicts.get(user)
        if isinstance(previous, dict) and previous.get("after_job_id") and previous["after_job_id"] == holder.job_id:
            # still the same holder: our job queued behind it (--after-holder) stays on record
            entry = replace(entry, queued_job_id=previous.get("queued_job_id"), after_job_id=previous["after_job_id"])
        conflicts[user] = entry.to_json()
        _write_conflicts(run_dir, conflicts)


def note_queued_after(run_dir: Path, job_id: str, after_job_id: str) -> None:
    """Our job ``job_id`` waits in the queue for the holder's ``after_job_id`` to end (--after-holder)."""
    with locked(run_dir):
        conflicts = read_conflicts(run_dir)
        entry = conflicts.get(current_user())
        if not isinstance(entry, dict):
            return
        entry.update(queued_job_id=job_id, after_job_id=after_job_id)
        _write_conflicts(run_dir, conflicts)


def clear_conflict(run_dir: Path, user: str | None = None) -> None:
    if not (run_dir / CONFLICTS_FILE).exists():
        return  # nothing on record: no lock to take (most runs, most of the time)
    with locked(run_dir):
        conflicts = read_conflicts(run_dir)
        if conflicts.pop(user or current_user(), None) is not None:
            _write_conflicts(run_dir, conflicts)


def _write_conflicts(run_dir: Path, conflicts: dict[str, Any]) -> None:
    atomic_write_text(run_dir / CONFLICTS_FILE, json.dumps(conflicts, indent=2, sort_keys=True) + "\n")


def read_conflicts(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFLICTS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb", closefd=True) as handle:
            data = parse_json(handle.read(1 << 20))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a broken record (or a planted link) only loses a hint; the claim is in prove_run.json
    return data if isinstance(data, dict) else {}


def recorded_conflict(run_dir: Path, user: str | None = None) -> Conflict | None:
    """This user's recorded conflict on ``run_dir``; ``None`` also when it is unreadable (a hint lost:
    :func:`checked_conflict` says why)."""
    try:
        return checked_conflict(run_dir, user)
    except UnreadableValue:
        return None


def checked_conflict(run_dir: Path, user: str | None = None) -> Conflict | None:
    """:func:`recorded_conflict`, each field's type and range checked (``values.CONFLICT_FIELDS``):
    ``UnreadableValue`` naming the first that does not fit."""
    entry = _checked_entry(run_dir, user)
    return None if entry is None else Conflict.from_json(entry)


def _checked_entry(run_dir: Path, user: str | None) -> dict[str, Any] | None:
    from prove_jobs.values import conflict_fields

    user = user or current_user()
    entry = read_conflicts(run_dir).get(user)
    return None if entry is None else conflict_fields(entry, run_dir / CONFLICTS_FILE, user)
