"""Reading a file someone else could have made, in a folder a whole group shares, at a bounded cost.

Any member of the group can plant, where prove-jobs reads, a FIFO (an ``open`` waits for a writer
that never comes), a symbolic link to ``/dev/zero`` or to a 5 GB file, or a log of one endless line.
Every read of a file below a data root goes through here:

* the file is opened ``O_NONBLOCK`` and judged by ``fstat`` on the open descriptor, so what is read
  is what was judged (no stat-then-open race): only a regular file is read; a FIFO, device, socket or
  folder is :class:`NotReadable`, one line naming it, never a wait;
* no symbolic link is followed that prove-jobs did not make: below the folder given (``below``: the
  run dir, the user's own choice) each component is opened ``O_NOFOLLOW``, relative to the one
  before (``dir_fd``), so a link swapped in on the way is refused, not followed. The only links
  prove-jobs makes there are ``prove/job.out`` and ``prove/job.err`` (``follow_last``);
* every read has a ceiling by kind: configs and model files are read whole up to :data:`MAX_CONFIG_BYTES`
  and refused above it; ``job.err`` and ``last_checkpoint`` from their tail; logs window by window
  (:func:`windows`), each window at most :data:`WINDOW_BYTES`, a line longer than that skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from prove_jobs.errors import RunError

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

MAX_CONFIG_BYTES = 1 << 20  # a flat mmseg config is 10-30 KB, a model template 2 KB: anything this big is not one
MAX_POINTER_BYTES = 4096  # last_checkpoint holds one path
TAIL_BYTES = 64 * 1024  # of a job's stderr: the traceback that says why it failed
WINDOW_BYTES = 4 << 20  # a log is read this much at a time; mmengine's lines are a few hundred bytes

_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: opening a FIFO never waits for a writer
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotReadable(RunError):
    """A file prove-jobs will not read: not a regular file, a link it did not make, or over its ceiling."""


def what_it_is(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


Below = Path | str | int | None  # a folder above the file, or a descriptor on one (then the path is relative to it)


def open_file(path: Path | str, *, below: Below = None, follow_last: bool = False) -> tuple[int, os.stat_result]:
    """A descriptor on the regular file ``path`` and its ``fstat``; the caller closes it.

    ``below``: a folder above ``path`` (the run dir), or a descriptor on one; the components between
    them are opened without following links. Without it only the last component is (``path``'s
    folders are the caller's). ``follow_last``: the file itself may be a link (one prove-jobs made:
    ``prove/job.err``); its target must still be a regular file. Raises :class:`NotReadable` (one
    line naming ``path``) or ``OSError``.
    """
    path = Path(path)
    parts: tuple[str, ...] = (path.name,)
    start = str(path.parent)
    if isinstance(below, int):
        parts, start = path.parts, "."
        dir_fd = os.dup(below)
    else:
        if below is not None:
            with contextlib.suppress(ValueError):
                parts = path.relative_to(below).parts
                start = str(below)
        dir_fd = os.open(start, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if not parts:
        os.close(dir_fd)
        raise NotReadable(f"{path}: cannot read (not a file)")
    try:
        for index, part in enumerate(parts[:-1]):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    _refuse(Path(start).joinpath(*parts[: index + 1]), part, dir_fd, folder=True)
                raise
            os.close(dir_fd)
            dir_fd = child
        flags = _FILE_FLAGS | (0 if follow_last else os.O_NOFOLLOW)
        try:
            fd = os.open(parts[-1], flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP and not follow_last:
                _refuse(path, parts[-1], dir_fd)
            raise
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotReadable(f"{path}: cannot read ({what_it_is(st.st_mode)}, not a regular file)")
    return fd, st


def _refuse(path: Path, name: str, dir_fd: int, *, folder: bool = False) -> None:
    """Raise for the link (or the file where a folder should be) at ``name``."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        target = "?"
        with contextlib.suppress(OSError):
            target = os.readlink(name, dir_fd=dir_fd)
        raise NotReadable(f"{path}: cannot read (a symbolic link to {target}; prove-jobs follows no link it did "
                          "not make)")
    if folder:
        raise NotReadable(f"{path}: cannot read ({what_it_is(st.st_mode)} where a folder should be)")


def read_capped(path: Path | str, limit: int = MAX_CONFIG_BYTES, *, below: Below = None) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes; a bigger one is :class:`NotReadable`."""
    fd, st = open_file(path, below=below)
    try:
        if st.st_size > limit:
            raise NotReadable(f"{path}: cannot read ({st.st_size:,} bytes, over the {limit:,} a file of its kind "
                              "may have)")
        data = _pread_all(fd, limit + 1, 0)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew since the fstat
        raise NotReadable(f"{path}: cannot read (over the {limit:,} bytes a file of its kind may have)")
    return data


def read_head(path: Path | str, limit: int, *, below: Below = None) -> bytes:
    """The first ``limit`` bytes of a regular file (a log's header)."""
    fd, _ = open_file(path, below=below)
    try:
        return _pread_all(fd, limit, 0)
    finally:
        os.close(fd)


def read_tail(path: Path | str, limit: int = TAIL_BYTES, *, below: Below = None,
              follow_last: bool = False) -> tuple[bytes, bool]:
    """The last ``limit`` bytes of a regular file, and whether that is the whole of it."""
    fd, st = open_file(path, below=below, follow_last=follow_last)
    try:
        start = max(0, st.st_size - limit)
        return _pread_all(fd, limit, start), start == 0
    finally:
        os.close(fd)


def _pread_all(fd: int, count: int, offset: int) -> bytes:
    chunks = []
    while count > 0:
        chunk = os.pread(fd, min(count, WINDOW_BYTES), offset)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class Window:
    """One window of a log: complete lines (``data``) from file offset ``start``; ``final``: it reaches the end
    (its last line may lack a newline); ``skipped``: (offset, bytes) of a line over the window dropped before it."""

    __slots__ = ("data", "final", "skipped", "start")

    def __init__(self, start: int, data: bytes, final: bool, skipped: tuple[int, int] | None = None) -> None:
        self.start, self.data, self.final, self.skipped = start, data, final, skipped


def windows(fd: int, start: int, end: int, size: int = WINDOW_BYTES) -> Iterator[Window]:
    """The bytes of ``fd`` from ``start`` to ``end`` as windows of whole lines, each at most ``size`` bytes.

    Memory stays at one window whatever the file holds. A line longer than a window (a planted line
    with no newline, the NUL bytes of a sparse file) is skipped to its newline, found window by window
    and over holes by ``SEEK_DATA`` (a hole holds no newline); one at the end with no newline is
    skipped to the end.
    """
    pos = start
    while pos < end:
        data = os.pread(fd, min(size, end - pos), pos)
        if not data:
            return
        if pos + len(data) >= end:
            yield Window(pos, data, True)
            return
        cut = data.rfind(b"\n") + 1
        if cut:
            yield Window(pos, data[:cut], False)
            pos += cut
            continue
        after = _next_newline(fd, pos + len(data), end, size)
        skipped = (pos, (end if after is None else after) - pos)  # its length without the newline
        pos = end if after is None else after + 1
        yield Window(pos, b"", pos >= end, skipped)


def _next_newline(fd: int, pos: int, end: int, size: int) -> int | None:
    while pos < end:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole to the end
                return None
            if exc.errno != errno.EINVAL:  # a filesystem without SEEK_DATA: read on
                raise
        data = os.pread(fd, min(size, end - pos), pos)
        if not data:
            return None
        found = data.find(b"\n")
        if found >= 0:
            return pos + found
        pos += len(data)
    return None
