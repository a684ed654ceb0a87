"""Where the log cache lives: one file per folder looked at, and when a file or an entry leaves it.

One file for everything grew with every root anyone ever looked at: after one ``status --root`` of a
root of 50,000 planted runs, each later ``status`` of a 4-run root loaded those 50,000 summaries
again (1.8 s and 716 MB instead of 0.08 s and 13 MB), even once the runs were deleted. Now:

* **A file per scope** (the ``--root`` folder, a sweep's data root, a run dir's data root): a status
  loads what it may need and nothing else, so a look at a big root never slows one at a small root.
* **Entries leave** a file when their run is seen gone (its folder missing, or not found again by a
  ``--root`` listing of the scope), when no status has looked at them for ``MAX_AGE_S``, and beyond
  ``MAX_RUNS`` per file, the longest unseen first (a bound for a root of planted runs).
* **Files leave** the cache folder when no status has used them for ``MAX_AGE_S``, or when their scope
  folder is gone; the single ``logs.marshal`` of earlier versions goes at the first save.

A file starts with its scope's path on one line, so that a sweep of the folder reads only that line.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

MAX_AGE_S = 14 * 24 * 3600.0  # unseen this long: a sweep nobody looks at any more
MAX_RUNS = 20_000  # runs per cache file: 20 of the group's biggest sweeps
SEEN_EVERY_S = 24 * 3600.0  # a run's last-seen time is written again at most this often (saves a save)
SUFFIX = ".marshal"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/prove-jobs/logs/`` (``~/.cache/prove-jobs/logs/`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prove-jobs" / "logs"


def default_cache_path(scope: Path | None = None) -> Path:
    """The cache file of ``scope`` (an absolute folder; ``None``: the one for runs of no common folder)."""
    return cache_dir() / f"{_fnv1a(os.fsencode(str(scope)) if scope is not None else b''):016x}{SUFFIX}"


def _fnv1a(data: bytes) -> int:
    """A 64-bit FNV-1a hash: a file name per scope without hashlib (OpenSSL: 4 ms and 3.5 MB of every status)."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def scope_line(scope: Path | None) -> bytes:
    """The first line of a cache file: its scope, as the file system spells it (no newline in it can end it)."""
    return os.fsencode(str(scope)).replace(b"\\", b"\\\\").replace(b"\n", b"\\n") + b"\n" if scope else b"\n"


def _scope_of(line: bytes) -> Path | None:
    text = line.rstrip(b"\n").replace(b"\\n", b"\n").replace(b"\\\\", b"\\")
    return Path(os.fsdecode(text)) if text else None


def sweep_folder(keep: Path, now: float | None = None) -> list[Path]:
    """Remove the cache files other than ``keep`` that are too old or whose scope is gone; returns them.

    Run when a cache file is saved (something was read): a few system calls per file in the folder.
    """
    now = time.time() if now is None else now
    gone: list[Path] = []
    folder = keep.parent
    old = folder.parent / "logs.marshal"  # before one file per scope: everything in one
    candidates = [old] if old.exists() else []
    with contextlib.suppress(OSError):
        candidates += [Path(e.path) for e in os.scandir(folder) if e.name.endswith(SUFFIX) and e.path != str(keep)]
    for path in candidates:
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_uid != os.getuid():
                    continue  # not ours to remove
                scope = _scope_of(fh.readline(4096)) if path != old else None
            if path == old or now - st.st_mtime > MAX_AGE_S or (scope is not None and not scope.is_dir()):
                path.unlink()
                gone.append(path)
        except OSError:
            continue
    return gone

