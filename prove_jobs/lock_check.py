"""Do the data root's file locks hold across nodes? Checked on the real cluster, never assumed.

prove-jobs' claims and training locks are ``flock``s (``lock_mode = "fcntl"``). On a local disk, NFSv4 or
Lustre mounted with ``-o flock`` they are seen from every host; on BeeGFS without
``tuneUseGlobalFileLocks``, Lustre with ``localflock``, and FUSE filesystems they stop at the node: two
jobs on two nodes would both hold one run's training lock and train it twice in one folder. The check:
the login side takes a probe's lock while a job on each of two nodes tries it, then a job on one node
takes it while the login side and the other node try (``lock_probe.py`` is the nodes' side). Every party
must see every other's lock. The result is recorded in the data root (``.prove-jobs/lock-check.json``)
and ``submit`` refuses ``fcntl`` locks on a root where they were seen to stop at the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prove_jobs.errors import ProveJobsError, SchedulerUnavailable
from prove_jobs.fsafe import atomic_write_text, make_dirs
from prove_jobs.identity import current_host, current_user
from prove_jobs.lock_probe import WAIT_S, try_lock, wait_for
from prove_jobs.metadata import now
from prove_jobs.scheduler import call

CHECK_FILE = Path(".prove-jobs") / "lock-check.json"
PROBE = Path(".prove-jobs") / "lock-probe"
STALE_AFTER_S = 30 * 86400  # a filesystem's mount options change with upgrades: check again monthly
IMMEDIATE_S = 60  # how long the probe's jobs may wait for nodes before the check gives up


@dataclass(frozen=True)
class LockCheck:
    """What one check found: ``global`` (every party saw every other's lock) or ``node-local``."""

    result: str
    filesystem: str  # "fuse /srv/backing": the type and source of the mount holding the data root
    checked_at: float
    by: str  # user@host
    parties: tuple[str, ...]  # "login (vm)", "mn1", "mn2"
    missed: tuple[str, ...] = ()  # "a lock taken on the login (vm) was not seen on mn1"

    def line(self, root: Path) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.checked_at))
        if self.result == "global":
            return (f"{root}: flock holds across {', '.join(self.parties)} on {self.filesystem} (checked {when} "
                    f"by {self.by})")
        return (f"{root}: flock stops at the node on {self.filesystem} (checked {when} by {self.by}): "
                f"{'; '.join(self.missed)}. Set [sharing] lock_mode = \"soft\" in the sweep file (marker files "
                "created O_EXCL, which hold there: docs/cluster.md), or mount it with global locks")


def filesystem_of(path: Path) -> str:
    """``<type> <source>`` of the mount that holds ``path`` (the longest mount point above it)."""
    best, found = "", "unknown"
    target = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            fstype, source = line.split(" - ", 1)[1].split()[:2]
            best, found = point, f"{fstype} {source}"
    return found


def read_check(root: Path) -> LockCheck | None:
    """The root's recorded check; ``None`` when there is none or it cannot be read as one."""
    from prove_jobs.safe_read import read_capped

    try:
        data = json.loads(read_capped(root / CHECK_FILE, 1 << 16))
        return LockCheck(str(data["result"]), str(data["filesystem"]), float(data["checked_at"]), str(data["by"]),
                         tuple(map(str, data["parties"])), tuple(map(str, data.get("missed", ()))))
    except (OSError, ProveJobsError, ValueError, KeyError, TypeError):
        return None


def is_fresh(check: LockCheck | None, root: Path) -> bool:
    return (check is not None and check.result in ("global", "node-local")
            and now() - check.checked_at < STALE_AFTER_S and check.filesystem == filesystem_of(root))


def check_locks(root: Path, *, partition: str | None = None, python: str | None = None,
                immediate_s: int = IMMEDIATE_S) -> LockCheck:
    """Run the check on the cluster and record it in ``root``; raises ``SchedulerUnavailable`` when SLURM cannot
    run the probe (no node free within ``immediate_s``)."""
    probe = root / PROBE
    make_dirs(probe.parent)
    for leftover in (f"{probe}.holding", f"{probe}.done"):  # our own markers of an interrupted check
        with contextlib.suppress(OSError):
            os.unlink(leftover)
    login = f"login ({current_host()})"
    srun = ["srun", *([f"--partition={partition}"] if partition else []), "--ntasks-per-node=1", "--cpus-per-task=1",
            "--mem=100M", "--time=3", f"--immediate={immediate_s}", "--job-name=prove-lock-check",
            "--kill-on-bad-exit=0"]
    nodes = _two_nodes(partition)
    command = [*srun, f"--nodes={nodes}", python or sys.executable, "-m", "prove_jobs.lock_probe"]
    missed: list[str] = []
    # 1. the login side holds the lock; each node tries
    fd = os.open(probe, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o664)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        tried = _said(call([*command, "try", str(probe)], timeout_s=immediate_s + WAIT_S + 30))
    finally:
        os.close(fd)
    missed += [f"a lock taken on the {login} was not seen on {host}" for host, said in tried if said == "free"]
    # 2. a job on the first node holds it; the login side and the other node try
    answer: dict[str, str] = {}
    pair = threading.Thread(target=lambda: answer.update(out=_run_quietly([*command, "pair", str(probe)],
                                                                            immediate_s + 2 * WAIT_S + 30)))
    pair.start()
    holder = ""
    try:
        # stop waiting at once when the holding job's srun has ended (refused)
        if wait_for(f"{probe}.holding", immediate_s + WAIT_S, alive=pair.is_alive):
            holder = Path(f"{probe}.holding").read_text(errors="replace").strip() or "a node"
            if not try_lock(str(probe)):
                missed.append(f"a lock taken on {holder} was not seen on the {login}")
    finally:
        atomic_write_text(Path(f"{probe}.done"), "done\n")
        pair.join()
        for marker in (f"{probe}.holding", f"{probe}.done"):
            with contextlib.suppress(OSError):
                os.unlink(marker)
    paired = _said(answer.get("out", ""))
    if not holder:
        said = answer.get("out", "")[:300]
        raise SchedulerUnavailable(f"the lock check's jobs did not start within {immediate_s} s: {said}")
    missed += [f"a lock taken on {holder} was not seen on {host}" for host, said in paired if said == "free"]
    parties = (login, *sorted({host for host, _ in tried}))
    check = LockCheck("node-local" if missed else "global", filesystem_of(root), now(),
                      f"{current_user()}@{current_host()}", parties, tuple(missed))
    atomic_write_text(root / CHECK_FILE, json.dumps(asdict(check), indent=1) + "\n", mode=0o664)
    return check


def check_for(sweep_path: Path | None, *, root: Path | None, partition: str | None,
              data_root: Path | None = None) -> tuple[LockCheck, Path]:
    """``prove-jobs check-locks``: the check of a sweep's data root (its partition and Python), or of ``root``."""
    python = None
    if sweep_path is not None:
        from prove_jobs.spec import load_sweep

        sweep = load_sweep(sweep_path, data_root=data_root)
        root, partition, python = sweep.data_root, partition or sweep.resources.partition, sweep.resources.python
    if root is None:
        raise ProveJobsError("check-locks: name a sweep file or --root DIR")
    return check_locks(root, partition=partition, python=python), root


def locks_hold_or_refuse(root: Path, *, lock_mode: str, partition: str | None, python: str | None,
                         dry_run: bool = False) -> str | None:
    """Before a submit to SLURM: refuse ``fcntl`` locks on a root where they were seen to stop at the node;
    check a root never (or long ago) checked first. Returns a warning when the check could not run."""
    if lock_mode != "fcntl":
        return None
    check = read_check(root)
    if not is_fresh(check, root):
        if dry_run:
            return None  # a real submit checks it first
        try:
            check = check_locks(root, partition=partition, python=python)
        except (SchedulerUnavailable, OSError) as exc:  # no node free, a probe file another user made
            return (f"{root}: could not check that flock holds across nodes ({str(exc)[:200]}); submitting as if it "
                    "did: run `prove-jobs check-locks` when the cluster has two nodes free")
    if check is not None and check.result == "node-local":
        raise ProveJobsError(check.line(root))
    return None


def _two_nodes(partition: str | None) -> int:
    """2 when the partition has two nodes up (the check needs two), else 1."""
    try:
        where = [f"--partition={partition}"] if partition else []
        out = call(["sinfo", "--noheader", "--responding", "--Node", *where, "--format=%n %t"], timeout_s=15)
    except SchedulerUnavailable:
        return 1
    # one line per node and partition: a node in two partitions is counted once
    up = {name for name, state in (line.split() for line in out.splitlines() if len(line.split()) == 2)
          if state.rstrip("*~#") in ("idle", "mix", "alloc", "comp")}
    return 2 if len(up) >= 2 else 1


def _said(out: str) -> list[tuple[str, str]]:
    return [(parts[0], parts[1]) for parts in (line.split() for line in out.splitlines()) if len(parts) == 2]


def _run_quietly(command: list[str], timeout_s: float) -> str:
    try:
        return call(command, timeout_s=timeout_s)
    except SchedulerUnavailable as exc:
        return f"error {str(exc)[:200]}"
