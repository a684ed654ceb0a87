"""Writing in a folder a whole group shares, without letting anyone redirect the writes.

A data root is group-writable by design, so any member can plant a symbolic link in it: a
``prove/`` that points into a colleague's home, a ``prove_run.json`` that points at one of her
files. Every write prove-jobs makes below a data root goes through here:

* directories are opened one component at a time, from ``/``, with ``O_NOFOLLOW``; a link on the
  way is followed only when it belongs to the user running prove-jobs or to root (your own
  ``/shared -> /mnt/nfs``), never when someone else made it;
* a file is written to a temp file created ``O_EXCL | O_NOFOLLOW`` in that directory, its mode
  set on the open descriptor (``fchmod``), then renamed over the target (a reader sees the old
  file or the new one, never half); a link where the file should be is refused;
* a failed write (a full disk) leaves the previous file as it was, and says which file.
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
    from collections.abc import Iterable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_LINKS = 16  # links followed while opening one path (the kernel's own limit is 40)


class LinkRefused(RunError):
    """A symbolic link someone else made, where prove-jobs was about to write."""


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def owner_name(uid: int) -> str:
    """The user name of ``uid`` (the number when it has none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def owner_and_time(st: os.stat_result) -> str:
    """``owner bob, modified 2026-01-02 03:04:05``: who last changed a file, as far as its inode says."""
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))
    return f"owner {owner_name(st.st_uid)}, modified {when}"


def refuse_link(path: Path, st: os.stat_result) -> None:
    target = "?"
    with contextlib.suppress(OSError):
        target = os.readlink(path)
    raise LinkRefused(f"{path}: a symbolic link (to {target}, made by {owner_name(st.st_uid)}) where prove-jobs "
                      "writes; it never writes through a link someone else made in a shared folder: remove it")


def open_dir(path: Path, *, create: bool = False, _links: int = 0) -> int:
    """A descriptor on the directory ``path``, opened component by component without following a
    link that someone else made; ``create`` makes missing directories on the way (the umask applies)."""
    parts = Path(os.path.abspath(path)).parts
    fd = os.open("/", _DIR_FLAGS)
    try:
        for index, part in enumerate(parts[1:], start=1):
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # made meanwhile by a colleague: opened like any other
                    os.mkdir(part, 0o777, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                here = Path(*parts[: index + 1])
                if not stat.S_ISLNK(st.st_mode):
                    raise
                if not _trusted(st):
                    refuse_link(here, st)
                if _links >= _MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symbolic links", str(here)) from None
                target = Path(os.readlink(part, dir_fd=fd))
                resolved = (Path(*parts[:index]) / target).joinpath(*parts[index + 1:])
                os.close(fd)
                fd = -1
                return open_dir(resolved, create=create, _links=_links + 1)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def make_dirs(path: Path) -> None:
    """``mkdir -p`` that never follows a link someone else made."""
    os.close(_or_run_error(path, lambda: open_dir(path, create=True)))


def check_below(root: Path, paths: Iterable[Path]) -> None:
    """Refuse, before anything is written, a link someone else made anywhere between ``root`` and each of
    ``paths`` (``root`` itself is the user's own choice). The writes check again as they go: this
    check makes a planted link cost nothing rather than half a submission."""
    root = Path(os.path.abspath(root))
    seen: set[Path] = set()
    for path in paths:
        here = root
        for part in Path(os.path.abspath(path)).relative_to(root).parts:
            here = here / part
            if here in seen:
                continue
            seen.add(here)
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                break
            except OSError:
                break  # unreadable: the write itself will say so, naming the file
            if stat.S_ISLNK(st.st_mode) and not _trusted(st):
                refuse_link(here, st)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all: a temp file beside it, then a rename over it.

    ``mode``: the file's permission bits (default: 0666 less the umask), set on the open file.
    """
    path = Path(path)
    dir_fd = _or_run_error(path, lambda: open_dir(path.parent, create=True))
    tmp = f".{path.name}.{os.urandom(6).hex()}.tmp"
    try:
        try:
            st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            refuse_link(path, st)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode if mode is not None else 0o666 & ~current_umask())
            data = text.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise RunError(f"{path}: cannot write ({exc.strerror or exc}); the previous version, if any, is as it was"
                       ) from None
    finally:
        os.close(dir_fd)


def replace_link(link: Path, target: str) -> None:
    """Make ``link`` a symbolic link to ``target`` (relative), atomically.

    Whatever stands at ``link`` (the previous submitter's link, or one planted there) is replaced
    by a rename in a folder opened without following links: it is never followed.
    """
    dir_fd = _or_run_error(link, lambda: open_dir(link.parent, create=True))
    tmp = f".{link.name}.{os.urandom(6).hex()}"
    try:
        os.symlink(target, tmp, dir_fd=dir_fd)
        os.replace(tmp, link.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise RunError(f"{link}: cannot write ({exc.strerror or exc})") from None
    finally:
        os.close(dir_fd)


def _or_run_error(path: Path, opener: object) -> int:
    try:
        return opener()  # type: ignore[operator, no-any-return]
    except LinkRefused:
        raise
    except OSError as exc:
        raise RunError(f"{exc.filename or path}: cannot open its folder ({exc.strerror or exc})") from None
