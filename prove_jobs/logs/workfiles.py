"""What a run's files say beyond their records (the newest start's: when last written, a cut-off last line, the
log to show), and mmcv's (mmseg 0.x) starts read: each one's ``<ts>.log.json`` and ``<ts>.log``."""

from __future__ import annotations

import os

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from prove_jobs.logs.assemble import FileGetter
    from prove_jobs.logs.filestate import FileState
    from prove_jobs.logs.layout import RunFiles, StartFiles

# a start's timestamp, its .log.json and .log, read
Legacy = tuple[str, "str | None", "FileState | None", "str | None", "FileState | None"]


def read_legacy(files: RunFiles, get: FileGetter, warnings: list[str]) -> list[Legacy]:
    """mmcv's (mmseg 0.x) starts: each one's ``<ts>.log.json`` and ``<ts>.log``, read (those that could be)."""
    read: list[Legacy] = []
    for name, json_path, log_path in files.legacy_starts():
        json_state = get(json_path, "json0", warnings) if json_path else None
        text_state = get(log_path, "text", warnings) if log_path else None
        if json_state is not None or text_state is not None:
            read.append((name, json_path, json_state, log_path, text_state))
    return read


def newest_legacy(newest: Legacy) -> dict[str, Any]:
    """The newest 0.x start's files: when they were last written, the text log to show."""
    _name, json_path, json_state, log_path, text_state = newest
    mtimes = [state.mtime for state in (json_state, text_state) if state is not None]
    return {"last_write": max(mtimes) if mtimes else None,
            "log_path": log_path if text_state is not None else json_path,
            "torn": tuple(str(path) for path, state in ((json_path, json_state), (log_path, text_state))
                          if path is not None and state is not None and state.offset < state.size)}


def unreadable(paths: Sequence[str]) -> str:
    """The note of a work dir whose only logs are in no shape prove-jobs reads."""
    from prove_jobs.logs.filestate import first_line

    shown = ", ".join(f"{os.path.basename(p)} ({first_line(p)})" for p in paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return (f"no log prove-jobs can read: {shown}{more}: no mmengine or mmcv (mmseg 0.x) log line, and no "
            "<timestamp>/ log folder, <timestamp>.log or .log.json beside them")


def newest_start(files: StartFiles, json_state: FileState | None, text_state: FileState | None) -> dict[str, Any]:
    """What the newest start's files say beyond the records: a cut-off last line, when they were last written."""
    states = [(path, state) for path, state in ((files.json_path, json_state), (files.log_path, text_state))
              if path is not None and state is not None]
    mtimes = [st.st_mtime for st in (files.json_st, files.log_st) if st is not None]
    return {
        "torn": tuple(str(path) for path, state in states if state.offset < state.size),
        "last_write": max(mtimes) if mtimes else None,
        "log_path": files.log_path if files.log_st is not None else files.json_path,
    }
