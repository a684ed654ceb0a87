"""Who and which process: the user and host a claim names, and a recorded process told from a later one given
the same pid (its start time and the boot it started in)."""

from __future__ import annotations

import os
from pathlib import Path


def current_user() -> str:
    """The name of the real uid, not ``$USER``: a claim says who holds a run, and the environment is anyone's to set."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry (containers): the uid
        return str(os.getuid())


def current_host() -> str:
    return os.uname().nodename


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/<pid>/stat): with the boot id, who it is."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return None


def same_process(pid: int | None, start: int | None, boot: str | None) -> bool:
    """Is ``pid`` alive and still the process that was recorded (same start time, same boot)?

    A pid is reused once its process is gone; a record without a start time (older prove-jobs)
    is judged by the pid alone.
    """
    if pid is None or not pid_alive(pid):
        return False
    if boot is not None and boot != boot_id():
        return False
    return start is None or process_start(pid) == start


def pid_alive(pid: int) -> bool:
    """Is a process with this pid alive on this host (zombies count as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: /proc still says whether it is a zombie
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def file_owner(path: Path) -> str:
    try:
        import pwd

        return pwd.getpwuid(os.stat(path).st_uid).pw_name
    except (KeyError, OSError):
        return "unknown"
