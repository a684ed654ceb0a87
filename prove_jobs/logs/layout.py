"""Which files make a run's logs, found with one listing of the run dir and a few stats.

mmengine writes each training start into a ``<YYYYMMDD_HHMMSS>/`` folder of the work dir and
never goes back to an older one: the newest start's two files say whether a run changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prove_jobs.logs.runlog import EMPTY, RunLog
from prove_jobs.runs import START_DIR

Identity = tuple[int, int, int]  # inode, size, mtime: what says a file is unchanged


@dataclass(frozen=True)
class StartFiles:
    """The files of one training start, with their stat (None: missing)."""

    name: str
    json_path: str | None
    json_st: os.stat_result | None
    log_path: str
    log_st: os.stat_result | None

    def identity(self) -> tuple[Identity | None, Identity | None]:
        return identity(self.json_st), identity(self.log_st)


@dataclass(frozen=True)
class RunFiles:
    """A run's training starts (folder names, in order), mmseg 0.x logs, and the newest start's files.

    ``legacy``: mmcv 1.x's (mmseg 0.x) ``*.log.json``, ``legacy_logs``: its ``<ts>.log``, both at the top of
    the work dir; ``other_logs``: other ``*.log`` files there (read only to say why nothing could be).
    """

    starts: tuple[str, ...]
    legacy: tuple[str, ...]
    newest: StartFiles | None
    legacy_logs: tuple[str, ...] = ()
    other_logs: tuple[str, ...] = ()

    def key(self, sparse: bool) -> object:
        """Equal keys: no new start, the newest start's files unchanged, the legacy logs unchanged."""
        return (sparse, self.starts, self.newest.identity() if self.newest else None,
                tuple(identity(stat_file(p)) for p in (*self.legacy, *self.legacy_logs, *self.other_logs)))

    def legacy_starts(self) -> list[tuple[str, str | None, str | None]]:
        """mmcv's starts, in order: (timestamp, its ``.log.json``, its ``.log``), either may be missing."""
        by_name: dict[str, list[str | None]] = {}
        for path in self.legacy:
            by_name.setdefault(_legacy_name(path), [None, None])[0] = path
        for path in self.legacy_logs:
            by_name.setdefault(_legacy_name(path), [None, None])[1] = path
        return [(name, js, log) for name, (js, log) in sorted(by_name.items())]


def _legacy_name(path: str) -> str:
    base = os.path.basename(path)
    return base[: -len(".log.json")] if base.endswith(".log.json") else base[: -len(".log")]


def find_run_files(work_dir: Path, entries: Sequence[os.DirEntry[str]] | None = None) -> RunFiles | RunLog:
    """The run's files, from ``entries`` (the run dir's listing, if the caller made one) or one ``scandir``.

    A run dir that cannot be listed is an empty :class:`RunLog` saying why (or nothing, when missing).
    """
    if entries is None:
        try:
            entries = list(os.scandir(work_dir))
        except FileNotFoundError:
            return EMPTY
        except OSError as exc:
            return RunLog(None, None, (), 0, None, None, None, (f"{work_dir}: cannot list ({exc.strerror or exc})",))
    # No link is followed: a <timestamp> link, or a log that is one, is anyone's to plant in a shared root.
    starts = tuple(sorted(e.name for e in entries if START_DIR.match(e.name) and is_dir_entry(e)))
    legacy = tuple(sorted(e.path for e in entries if e.name.endswith(".log.json") and is_file_entry(e)))
    logs = sorted((e for e in entries if e.name.endswith(".log") and is_file_entry(e)), key=lambda e: e.name)
    legacy_logs = tuple(e.path for e in logs if START_DIR.match(e.name[:-4]))
    other_logs = tuple(e.path for e in logs if not START_DIR.match(e.name[:-4]))
    newest = start_files(os.path.join(work_dir, starts[-1]), starts[-1]) if starts else None
    return RunFiles(starts, legacy, newest, legacy_logs, other_logs)


def start_files(ts_dir: str, name: str) -> StartFiles | None:
    """One start's JSON and text log; ``None`` for a ``Runner.test()`` folder (its <ts>.json holds test metrics)."""
    vis_data = os.path.join(ts_dir, "vis_data")
    json_path: str | None = os.path.join(vis_data, "scalars.json")
    json_st = stat_file(json_path) if json_path else None
    if json_st is None:
        has_vis = _lstat_is_dir(vis_data)
        if stat_file(os.path.join(ts_dir, f"{name}.json")):  # newer mmengine: also vis_data/config.py
            return None
        json_path = os.path.join(vis_data, f"{name}.json") if has_vis else None
        json_st = stat_file(json_path) if json_path else None
    log_path = os.path.join(ts_dir, f"{name}.log")
    return StartFiles(name, json_path, json_st, log_path, stat_file(log_path))


def stat_file(path: str) -> os.stat_result | None:
    """``path``'s own stat (a link's, not its target's), None when missing, a directory or under an unreadable
    parent. A FIFO, a device or a link is returned: reading it (``filestate.read_file``) says what it is."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return None if stat.S_ISDIR(st.st_mode) else st


def run_dir_of(path: str) -> str:
    """The run dir a log file belongs to: the parent of its ``<timestamp>/`` dir, else its own folder."""
    parts = path.split(os.sep)
    for index in range(len(parts) - 1, 0, -1):
        if START_DIR.match(parts[index]):
            return os.sep.join(parts[:index])
    return os.path.dirname(path)


def _lstat_is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def identity(st: os.stat_result | None) -> Identity | None:
    return None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns)


def is_file_entry(entry: os.DirEntry[str]) -> bool:
    """``is_file()`` that says False instead of raising (e.g. PermissionError on the parent)."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def is_dir_entry(entry: os.DirEntry[str]) -> bool:
    """``is_dir()`` of the entry itself (not a link's target) that says False instead of raising."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False
