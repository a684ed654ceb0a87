"""The node side of ``prove-jobs check-locks``: take or try the probe's flock where this process runs.

Run by ``srun`` on the nodes (``python -m prove_jobs.lock_probe try|pair PROBE``); standard library only.
``try``: print ``<host> held`` when another holder's lock is seen, ``<host> free`` when it is not.
``pair``: task 0 takes the lock, says so in ``PROBE.holding`` and keeps it until ``PROBE.done`` appears;
every other task waits for ``PROBE.holding``, then tries. The flock is ``fcntl.flock``, as filelock's (on a
read-only descriptor: a probe another member made is still usable).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Callable

WAIT_S = 90  # for the other side's marker: the holder's job may start a little after the others


def try_lock(path: str) -> bool:
    """Is ``path``'s flock held by someone this process can see? Takes and drops it when it is free."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if this process took it
    return False


def wait_for(path: str, timeout_s: float = WAIT_S, alive: Callable[[], bool] = lambda: True) -> bool:
    """Does ``path`` appear within ``timeout_s``? Stops waiting at once when ``alive()`` says its writer has ended."""
    deadline = time.monotonic() + timeout_s
    while not os.path.lexists(path):
        if not alive() or time.monotonic() > deadline:
            return os.path.lexists(path)
        time.sleep(0.1)
    return True


def hold_until(path: str, done: str) -> str:
    """Take the lock, say so beside it, keep it until ``done`` appears (at most ``WAIT_S``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return "busy"
    marker = os.open(path + ".holding", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o664)
    os.write(marker, socket.gethostname().encode())
    os.close(marker)
    wait_for(done)
    os.close(fd)
    return "holder"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("try", "pair"):
        sys.stderr.write("usage: python -m prove_jobs.lock_probe try|pair PROBE\n")
        return 2
    mode, path = argv
    host = socket.gethostname()
    if mode == "pair" and os.environ.get("SLURM_PROCID", "0") == "0":
        said = hold_until(path, path + ".done")
    elif mode == "pair" and not wait_for(path + ".holding"):
        said = "no-holder"
    else:
        said = "held" if try_lock(path) else "free"
    sys.stdout.write(f"{host} {said}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
