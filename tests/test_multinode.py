"""On a real cluster of two nodes (tests/cluster/multinode-up.sh; `make slurm-up NODES=2`): each node its own
network, hostname and address; the filesystem shared. One run trained by processes on both nodes.

Skipped, with the reason, where that cluster is not up (it needs root and namespaces).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Gate, checkpointed, long_sweep, read_or_empty, wait_until
from test_ddp import sweep_with

from prove_jobs.cli import main

MULTINODE_CONF = Path(os.environ.get("SLURM_MN_STATE_DIR", "/var/lib/prove-jobs-slurm-mn")) / "etc" / "slurm.conf"


def _cluster_up() -> bool:
    if not MULTINODE_CONF.is_file():
        return False
    env = {**os.environ, "SLURM_CONF": str(MULTINODE_CONF)}
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%D %T"], env=env, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "idle" in done.stdout


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.multinode,
    pytest.mark.slow,
    pytest.mark.skipif(not _cluster_up(),
                       reason="no two-node test cluster (`make slurm-up NODES=2`: root, namespaces)"),
]


@pytest.fixture
def on_two_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(MULTINODE_CONF))


def _status(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["status", str(path), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_one_run_trains_across_two_nodes(tmp_path: Path, demo: Path, on_two_nodes: None,
                                         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(demo)
    path = sweep_with(demo, 'partition = "gpu"\nnodes = 2\ngpus_per_node = 1\ncpus_per_task = 1\nmem_gb = 2\n'
                            'timeout_min = 10\n')
    args = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4"]
    assert main(["submit", str(path), *args, "--executor", "slurm"]) == 0
    assert main(["wait", str(path), *args, "--timeout", "150", "--poll", "1"]) == 0
    [row] = _status(path, capsys, *args)
    assert row["state"] == "completed" and row["iter"] == 20 and row["layout"] == "2x1 GPUs", row
    run_dir = Path(str(row["run_dir"]))
    [start] = [p for p in run_dir.iterdir() if p.name[:8].isdigit()]
    log = read_or_empty(start / f"{start.name}.log")
    assert "Distributed training: True" in log and "GPU number: 2" in log, log[:3000]
    # rank 0's log names both ranks' hosts, and where they met: the first node's address, not loopback
    [where] = [line for line in log.splitlines() if "prove-jobs: rank 0 of 2" in line]
    assert "ranks on 0: mn1, 1: mn2" in where and "rendezvous 10.250.0.11:" in where and "over eth0" in where, where
    assert row["node"] == "mn[1-2]", row
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    assert "mn[1-2]" in capsys.readouterr().out
    print(f"\ntwo-node run: {where.split(' - INFO - ')[-1]}")


# --- a node that dies ---------------------------------------------------------------------------------------

STATE = MULTINODE_CONF.parent.parent


def _kill_node(node: str) -> None:
    """The node dies as a machine does: its slurmd and every process in its namespace (the job's too), at once."""
    pids = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True, check=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _revive_nodes() -> None:
    subprocess.run(["bash", str(REPO / "tests" / "cluster" / "multinode-up.sh")], check=True, capture_output=True,
                   env={**os.environ, "SLURM_NODES": "2"}, timeout=120)


@pytest.fixture
def nodes_revived(on_two_nodes: None) -> Iterator[None]:
    yield
    _revive_nodes()


TWO_NODES = """
[resources]
partition = "gpu"
nodes = 2
gpus_per_node = 1
cpus_per_task = 1
mem_gb = 2
timeout_min = 10
"""


def _held_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
              resources: str = TWO_NODES) -> tuple[list[str], Gate, Path, dict[str, object]]:
    """demo_fcn_r18_tiny of DEMO_LONG submitted and held after its checkpoint at iteration 20."""
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(tmp_path)
    sweep = long_sweep(tmp_path, max_requeues=2, monkeypatch=monkeypatch, resources=resources)
    args = [str(sweep.path), "--model", "demo_fcn_r18_tiny"]
    assert main(["submit", *args, "--executor", "slurm"]) == 0
    gate = Gate(sweep.templates_dir / "stall.gate")
    wait_until("the training to hold after its first checkpoint", lambda: gate.reached, 240)
    [row] = _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")
    run_dir = Path(str(row["run_dir"]))
    assert checkpointed(run_dir) == 20, row
    return args, gate, run_dir, row


def _row(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    return _status(Path(args[0]), capsys, *args[1:])[0]


def _resumed_and_completed(args: list[str], run_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    done: dict[str, object] = wait_until("completion", lambda: (r := _row(args, capsys))["state"] == "completed"
                                         and r, 300)
    starts = sorted(p for p in run_dir.iterdir() if p.name[:8].isdigit())
    second = read_or_empty(starts[-1] / f"{starts[-1].name}.log")
    assert "resumed epoch: 0, iter: 20" in second, second[:3000]
    return done


def test_a_node_that_dies_requeues_a_one_node_run_which_resumes_on_the_other(
        tmp_path: Path, nodes_revived: None, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import SLURM_RESOURCES

    args, gate, run_dir, row = _held_run(tmp_path, capsys, monkeypatch, SLURM_RESOURCES)
    first_node = str(row["node"])
    assert first_node in ("mn1", "mn2"), row
    killed_at = time.time()
    _kill_node(first_node)
    gate.open()
    said = wait_until("status to say the node failed", lambda: (r := _row(args, capsys))
                      and any("ended without a word" in n and first_node in n for n in r["notes"]) and r, 120)  # type: ignore[attr-defined]
    said_at = time.time()
    done = _resumed_and_completed(args, run_dir, capsys)
    assert done["restarts"] == 1 and [p[0] for p in done["curve"]] == [20, 40, 60, 80, 100, 120], done  # type: ignore[attr-defined]
    print(f"\nnode {first_node} killed; status said so after {said_at - killed_at:.0f} s: {said['state']}, "
          f"{said['notes']}; completed on the other node {time.time() - killed_at:.0f} s after the kill")


def test_a_node_that_dies_requeues_a_two_node_run_which_waits_for_it(
        tmp_path: Path, nodes_revived: None, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM's default (JobRequeue=1): the job is queued again and waits for two nodes."""
    args, gate, run_dir, row = _held_run(tmp_path, capsys, monkeypatch)
    assert row["node"] == "mn[1-2]", row
    killed_at = time.time()
    _kill_node("mn2")
    # SLURM's reason is BeginTime for a few seconds after a requeue, then that a node it needs is down
    waiting = wait_until("status to say why it waits", lambda: (r := _row(args, capsys))["state"] == "requeued"
                         and "DOWN" in str(r["pending_reason"]) and r, 120)
    said_after = time.time() - killed_at
    assert any("ended without a word and SLURM queued it again" in n for n in waiting["notes"]), waiting
    gate.open()
    _revive_nodes()
    done = _resumed_and_completed(args, run_dir, capsys)
    assert done["restarts"] == 1 and any("ended without a word" in n for n in done["notes"]), done  # type: ignore[attr-defined]
    print(f"\nmn2 died: {said_after:.0f} s later status said {waiting['state']} ({waiting['pending_reason']}): "
          f"{waiting['notes']}; once mn2 was back it resumed from iteration 20 and completed "
          f"{time.time() - killed_at:.0f} s after the death")


def test_a_node_that_dies_fails_a_two_node_run_where_slurm_does_not_requeue(
        tmp_path: Path, nodes_revived: None, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A site with JobRequeue=0 (here: the job's own Requeue=0): the job ends; the run is failed with SLURM's
    reason; resubmitted while one node is down, it waits, saying why, and resumes once the node is back."""
    args, gate, run_dir, row = _held_run(tmp_path, capsys, monkeypatch)
    job_id = str(row["job_id"])
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "Requeue=0"], check=True)
    killed_at = time.time()
    _kill_node("mn2")
    failed = wait_until("the run to fail", lambda: (r := _row(args, capsys))["state"] == "failed" and r, 120)
    failed_after = time.time() - killed_at
    assert any(f"SLURM ended job {job_id} with NODE_FAIL" in n for n in failed["notes"]), failed
    gate.open()
    assert main(["resubmit", *args, "--failed", "--executor", "slurm"]) == 0
    waiting = wait_until("status to say why it waits",
                         lambda: (r := _row(args, capsys))["state"] == "pending" and "DOWN" in str(r["pending_reason"])
                         and r, 120)
    _revive_nodes()
    _resumed_and_completed(args, run_dir, capsys)
    print(f"\nmn2 died (Requeue=0): failed {failed_after:.0f} s later: {failed['notes']}; resubmitted while it "
          f"was down: {waiting['state']} ({waiting['pending_reason']}); resumed and completed "
          f"{time.time() - killed_at:.0f} s after the death")


def _set_link(node: str, up: bool) -> None:
    subprocess.run(["ip", "link", "set", f"veth-{node}", "up" if up else "down"], check=True)


def test_a_node_cut_off_the_network_fails_a_two_node_run_within_the_collective_timeout(
        tmp_path: Path, nodes_revived: None, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    args, gate, run_dir, _row_held = _held_run(tmp_path, capsys, monkeypatch, TWO_NODES + "collective_timeout_s = 5\n")
    cut_at = time.time()
    try:
        _set_link("mn2", up=False)
        gate.open()
        failed = wait_until("the run to fail", lambda: (r := _row(args, capsys))["state"] == "failed" and r, 120)
        failed_after = time.time() - cut_at
    finally:
        _set_link("mn2", up=True)
    assert str(failed["error"]).startswith("lost contact across nodes: rank 0 on mn1 had no answer from the ranks "
                                           "on mn2 within the collective timeout (5 s)"), failed
    assert failed_after < 60, failed_after  # the collective timeout, not the job's 10-minute limit
    assert main(["resubmit", *args, "--failed", "--executor", "slurm"]) == 0
    _resumed_and_completed(args, run_dir, capsys)
    print(f"\nmn2 cut off the network: the run failed {failed_after:.0f} s later: {str(failed['error'])[:200]}; "
          f"resubmitted, it resumed from iteration 20 and completed {time.time() - cut_at:.0f} s after the cut")


# --- a filesystem whose locks stop at the node ----------------------------------------------------------------

HOLD = """
import socket, sys, time
from pathlib import Path
from prove_jobs.locks import training_lock
from prove_jobs.errors import LockConflict
try:
    with training_lock(Path(sys.argv[1]), sys.argv[2], wait_s=0.5):
        print(socket.gethostname(), "trains", flush=True)
        time.sleep(4)
except LockConflict:
    print(socket.gethostname(), "refused", flush=True)
"""


def _mount_views(backing: Path, view: Path) -> list[list[str]]:
    """The login side and each node see ``backing`` at ``view`` through a FUSE view of their own (bindfs): a flock
    taken through one is not seen through another, as on BeeGFS without global locks or Lustre's localflock."""
    undo = []
    subprocess.run(["bindfs", str(backing), str(view)], check=True)
    undo.append(["fusermount", "-u", "-z", str(view)])  # lazy: a job step may still be finishing in it
    for node in ("mn1", "mn2"):
        pid = (STATE / "run" / f"slurmd-{node}.pid").read_text().strip()
        subprocess.run(["nsenter", "-t", pid, "-m", "bindfs", str(backing), str(view)], check=True)
        undo.insert(0, ["nsenter", "-t", pid, "-m", "fusermount", "-u", "-z", str(view)])
    return undo


@pytest.fixture
def node_local_root(tmp_path: Path, on_two_nodes: None) -> Iterator[Path]:
    import shutil

    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed (apt-get install bindfs)")
    backing, view = tmp_path / "backing", tmp_path / "view"
    backing.mkdir()
    view.mkdir()
    undo = _mount_views(backing, view)
    try:
        yield view
    finally:
        for command in undo:
            subprocess.run(command, check=False, capture_output=True)


def _two_jobs_take_the_training_lock(run_dir: Path, mode: str) -> list[str]:
    import sys

    out = subprocess.run(["srun", "--nodes=2", "--ntasks-per-node=1", "--mem=100M", "--time=2", "--immediate=60",
                          sys.executable, "-c", HOLD, str(run_dir), mode], capture_output=True, text=True,
                         timeout=120, cwd=run_dir, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return sorted(out.stdout.split("\n")[:-1])


def test_locks_that_stop_at_the_node_are_found_and_not_relied_on(
        node_local_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = node_local_root / "run"
    run_dir.mkdir()
    # Before: two jobs on two nodes both hold one run's training lock (flock), and would both train it.
    before = _two_jobs_take_the_training_lock(run_dir, "fcntl")
    assert before == ["mn1 trains", "mn2 trains"], before
    # The check finds it, both ways round, and says what to do.
    assert main(["check-locks", "--root", str(node_local_root), "--partition", "gpu"]) == 1
    said = capsys.readouterr().err
    assert "flock stops at the node on fuse " in said and "a lock taken on the login" in said and \
        'lock_mode = "soft"' in said, said
    # A submit into that root with flock locks is refused in one line, nothing written.
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(tmp_path)
    (node_local_root / "data").mkdir()
    sweep = long_sweep(node_local_root / "data", max_requeues=1, monkeypatch=monkeypatch)
    Gate(sweep.templates_dir / "stall.gate").open()  # no hold
    args = [str(sweep.path), "--model", "demo_fcn_r18_tiny", "--executor", "slurm"]
    assert main(["submit", *args]) == 2
    refused = capsys.readouterr().err
    written = sorted(p.name for p in (node_local_root / "data" / "runs").iterdir())
    assert "flock stops at the node" in refused and written == [".prove-jobs"], (refused, written)  # the check's record
    # soft locks (marker files, O_EXCL) hold there: exactly one of the two jobs trains
    soft_run = node_local_root / "soft-run"  # a fresh one: never mix modes on one run dir (docs/locks.md)
    soft_run.mkdir()
    after = _two_jobs_take_the_training_lock(soft_run, "soft")
    assert sorted(line.split()[1] for line in after) == ["refused", "trains"], after
    sweep.path.write_text(sweep.path.read_text() + '\n[sharing]\nlock_mode = "soft"\n')
    assert main(["submit", *args]) == 0
    assert main(["wait", str(sweep.path), "--model", "demo_fcn_r18_tiny", "--timeout", "300", "--poll", "1"]) == 0
    print(f"\nfcntl across two nodes' views: {before}; check-locks: {said.strip()[:400]}; soft: {after}")
