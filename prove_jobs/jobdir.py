"""Where a user's submitit jobs live: ``<data_root>/.prove-jobs/submitit/<user>/<job id>/``.

A job's folder holds its pickle, which the node unpickles as the submitter: whoever can write
there, or rename the folder away and put another in its place, runs code as her. So:

* ``submitit/`` is shared (each member adds her own folder) and sticky, like ``/tmp``: nobody
  renames or removes another's folder in it;
* ``submitit/<user>/`` belongs to the user, mode 0750: only she writes in it, the group reads
  the job logs (``prove/job.out`` and ``job.err`` point there, for ``status``);
* a user folder that is a link, someone else's, or writable by others is refused at submit in one
  line naming it and its owner; a non-sticky ``submitit/`` of someone else's, writable by others, too.

Why not a private folder in the user's home: colleagues' ``status`` reads each other's job logs
through those links, and a home is often closed to the group (or not mounted on every node).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from prove_jobs.errors import RunError
from prove_jobs.fsafe import open_dir, owner_name
from prove_jobs.identity import current_user

SUBMITIT_DIR = ".prove-jobs/submitit"
PARENT_MODE = 0o1775  # sticky: every member adds her folder, nobody renames another's
USER_MODE = 0o750  # the user's alone to write; the group reads the job logs
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class JobFolderRefused(RunError):
    """A job folder someone else could rename, replace or write into."""


def job_folder(data_root: Path) -> Path:
    """submitit's folder for this user's jobs (pickles, scheduler stdout/stderr): ``%j`` is the job id."""
    return data_root / SUBMITIT_DIR / current_user() / "%j"


def check_job_folder(data_root: Path, *, create: bool = False) -> None:
    """Refuse (one line naming the folder and its owner) a job folder others could change; ``create``: make
    the missing folders with their modes. Without ``create`` nothing is written (a missing folder is fine)."""
    try:
        os.close(_checked(data_root / SUBMITIT_DIR / current_user(), create=create))
    except FileNotFoundError as exc:
        if create:
            raise RunError(f"{exc.filename or data_root}: cannot make the job folder ({exc.strerror})") from None


def open_user_folder(folder: Path) -> int:
    """A descriptor on the user's job folder ``folder`` (``.../submitit/<user>``), checked as at submit."""
    return _checked(folder, create=False)


def open_job_dir(user_fd: int, job_id: str) -> int:
    """A descriptor on ``<job id>/`` in the user's folder, made if missing; never through a link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(job_id, 0o777, dir_fd=user_fd)
    return os.open(job_id, _DIR_FLAGS, dir_fd=user_fd)


def _checked(user_folder: Path, *, create: bool) -> int:
    parent = user_folder.parent
    try:
        top = open_dir(parent.parent, create=create)  # .prove-jobs: the data root's shared folder
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunError(f"{parent.parent}: cannot open ({exc.strerror or exc})") from None
    try:
        parent_fd = _open_child(top, parent, create=create, mode=PARENT_MODE)
    finally:
        os.close(top)
    try:
        st = os.fstat(parent_fd)
        if not st.st_mode & stat.S_ISVTX:
            if st.st_uid == os.geteuid():
                if create:
                    os.fchmod(parent_fd, stat.S_IMODE(st.st_mode) | stat.S_ISVTX)
            elif st.st_mode & 0o022:
                owner = owner_name(st.st_uid)
                raise JobFolderRefused(
                    f"{parent}: writable by others without the sticky bit (made by {owner}): anyone could rename "
                    f"your job folder in it and put theirs in its place; {owner} (or root) can fix it: "
                    f"chmod +t {parent}")
        user_fd = _open_child(parent_fd, user_folder, create=create, mode=USER_MODE)
    finally:
        os.close(parent_fd)
    st = os.fstat(user_fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"belongs to {owner_name(st.st_uid)}, not to {current_user()}"
    elif st.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o}, owner {owner_name(st.st_uid)})"
    if problem:
        os.close(user_fd)
        raise JobFolderRefused(f"{user_folder}: your job folder {problem}: whoever writes there can run code as "
                               "you; nothing submitted. Remove it (or chmod go-w it and check what is in it)")
    return user_fd


def _open_child(dir_fd: int, path: Path, *, create: bool, mode: int) -> int:
    """``path.name`` in ``dir_fd``: a directory, never a link; made with ``mode`` when missing and ``create``."""
    try:
        return os.open(path.name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise JobFolderRefused(f"{path}: {what} (made by {owner_name(st.st_uid)}) where your job folder should be; "
                               "nothing submitted: remove it") from None
    with contextlib.suppress(FileExistsError):  # made meanwhile by someone: checked like any other
        os.mkdir(path.name, 0o700, dir_fd=dir_fd)
        fd = os.open(path.name, _DIR_FLAGS, dir_fd=dir_fd)
        # mkdir's mode passes through the umask; the group bit (setgid) is the parent's to give
        os.fchmod(fd, mode | (os.fstat(fd).st_mode & stat.S_ISGID))
        return fd
    return _open_child(dir_fd, path, create=False, mode=mode)
