"""Jobs the size of the field: several training processes per run (DDP), array throttling, split arrays.

The rendering math and the launch environment without SLURM; the jobs themselves on the project's
test cluster (`make slurm-up`: one node, 2 CPUs, 2 fake GPUs; gloo on CPU).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    SLURM_RESOURCES,
    SWEEPS,
    TEMPLATES,
    Gate,
    checkpointed,
    long_sweep,
    preempt,
    read_or_empty,
    wait_until,
)

from prove_jobs.cli import main
from prove_jobs.distributed import (
    Rank,
    distributed_environment,
    first_host,
    master_port,
    rendezvous_address,
    slurm_rank,
)
from prove_jobs.errors import RunError
from prove_jobs.executors import JOB_ENTRY
from prove_jobs.render import render_run
from prove_jobs.scheduler import slurm_available
from prove_jobs.spec import Sweep, load_sweep


def sweep_with(folder: Path, resources: str, *, variants: str = '["DEMO_REF", "DEMO_BS4"]') -> Path:
    text = (SWEEPS / "demo.toml").read_text()
    text = text[: text.index("[resources]")] + "[resources]\n" + resources
    text = text.replace('variants = ["DEMO_REF", "DEMO_BS4"]', f"variants = {variants}\ntemplates = 'templates'")
    if not (folder / "templates").exists():
        shutil.copytree(TEMPLATES, folder / "templates")
    path = folder / "sweep.toml"
    path.write_text(text.replace("${DEMO_ROOT:-demo}", str(folder)).replace("${DEMO_ROOT}", str(folder)))
    return path


# --- the math of a total batch over several processes ------------------------------------------------------

@pytest.mark.parametrize(("nodes", "gpus", "per_process"), [(1, 1, 4), (1, 2, 2), (2, 4, None), (1, 0, 4)])
def test_a_variants_batch_is_the_total_and_each_process_loads_its_share(
        tmp_path: Path, nodes: int, gpus: int, per_process: int | None) -> None:
    """DEMO_BS4's batch of 4 is one step's total: 1x1 -> 4, 1x2 -> 2 each; 2x4 (8 processes) cannot split it."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "variants" / "BS16.toml").write_text(
        'max_iters = 20\nbatch_size = 16\nwarmup_iters = 2\nval_interval = 10\ncrop_size = [64, 64]\n'
        '[lr_scaling]\nrule = "linear"\nbase_lr = 0.01\nbase_batch_size = 2\n')
    path = sweep_with(tmp_path, f"nodes = {nodes}\ngpus_per_node = {gpus}\n", variants='["DEMO_BS4", "BS16"]')
    if per_process is None:
        with pytest.raises(Exception, match=r"variant DEMO_BS4's batch_size 4 .* 8 processes \(nodes = 2 x "
                                            r"gpus_per_node = 4\)"):
            load_sweep(path)
        (templates / "variants" / "DEMO_BS4.toml").unlink()
        path.write_text(path.read_text().replace('"DEMO_BS4", ', ""))
        sweep = load_sweep(path)
        [run] = sweep.runs(["demo_fcn_r18_tiny"], ["BS16"])
        text = render_run(sweep, run).config_text
        assert "batch_size=2," in text and "total_batch_size = 16" in text and "world_size = 8" in text
        assert "lr=0.08" in text  # the linear rule uses the total batch
        return
    sweep = load_sweep(path)
    [run] = sweep.runs(["demo_fcn_r18_tiny"], ["DEMO_BS4"])
    text = render_run(sweep, run).config_text
    assert f"batch_size={per_process}," in text and "total_batch_size = 4" in text
    assert sweep.resources_for(run).world_size == nodes * max(gpus, 1)


def test_plan_refuses_a_batch_that_does_not_split_and_shows_the_split(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = sweep_with(tmp_path, "gpus_per_node = 3\n")
    assert main(["plan", str(bad)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"{bad}: resources: variant DEMO_REF's batch_size 2 (the total batch) does not split over " \
           "demo_segformer_tiny's 3 processes" in line
    good = sweep_with(tmp_path, "gpus_per_node = 2\n")
    assert main(["plan", str(good)]) == 0
    assert "4 = 2 x 2" in capsys.readouterr().out
    assert main(["plan", str(good), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["variant"], r["world_size"], r["batch_per_gpu"]) for r in rows} == {("DEMO_REF", 2, 1),
                                                                                 ("DEMO_BS4", 2, 2)}


def test_a_multi_process_run_is_refused_by_the_local_executor(tmp_path: Path, demo: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_with(demo, "gpus_per_node = 2\n")
    assert main(["submit", str(path), "--executor", "local"]) == 2
    assert "multi-GPU runs need SLURM (--executor slurm)" in capsys.readouterr().err
    assert not list((demo / "runs").iterdir())


def test_dry_run_asks_for_one_task_per_gpu_and_kills_the_job_when_a_rank_dies(
        tmp_path: Path, demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_with(demo, "nodes = 2\ngpus_per_node = 1\ncpus_per_task = 3\nmax_running = 1\n")
    assert main(["submit", str(path), "--executor", "slurm", "--dry-run"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:1",
                 "#SBATCH --cpus-per-task=3", "#SBATCH --array=0-3%1"):
        assert line in script.splitlines(), (line, script)
    assert re.search(r"^srun .*--kill-on-bad-exit=1", script, re.MULTILINE), script


# --- who a process is -------------------------------------------------------------------------------------------

def test_rank_and_rendezvous_from_slurms_variables() -> None:
    env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "gpu[03-04,07],cpu1"}
    rank = slurm_rank(env)
    assert rank == Rank(3, 4, 1) and not rank.leader
    assert slurm_rank({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) == Rank() and slurm_rank({}) == Rank()
    hosts = {"gpu03": ["10.0.0.3"]}
    assert distributed_environment(rank, env, lambda h: hosts.get(h, [])) == {
        "MASTER_ADDR": "10.0.0.3", "MASTER_PORT": str(master_port("4242")), "RANK": "3", "WORLD_SIZE": "4",
        "LOCAL_RANK": "1"}
    assert distributed_environment(rank, {**env, "MASTER_ADDR": "h", "MASTER_PORT": "1"})["MASTER_ADDR"] == "h"
    assert first_host("node7") == "node7" and first_host("a[1,3]") == "a1"


@pytest.mark.parametrize("said", ["Timed out waiting 5000ms for send operation to complete",
                                  "Application timeout caused pair closure",
                                  "Connection closed by peer [10.250.0.12]:34567"])
def test_a_collective_that_lost_a_peer_names_the_other_ranks_hosts(said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """gloo words one lost peer differently by where the collective was (each seen on the two-node cluster)."""
    import socket

    from prove_jobs import distributed

    monkeypatch.setattr(socket, "gethostname", lambda: "mn1")
    monkeypatch.setattr(distributed, "RANK_HOSTS", ["mn1", "mn2"])
    lost = distributed.lost_contact(RuntimeError(f"[gloo/transport/tcp/pair.cc:1] {said}"), Rank(0, 2, 0))
    assert lost is not None and lost.startswith("lost contact across nodes: rank 0 on mn1 had no answer from the "
                                                "ranks on mn2"), lost
    assert distributed.lost_contact(ValueError("bad config"), Rank(0, 2, 0)) is None
    assert distributed.lost_contact(RuntimeError(said), Rank()) is None


@pytest.mark.parametrize("nodelist", ["mn[1-2]", "mn1,mn2", "mn[1,2]", "mn1"])
def test_the_rendezvous_is_the_first_nodes_real_address_however_the_list_is_written(nodelist: str) -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": nodelist, "SLURM_JOB_NUM_NODES": "2"}
    debian = {"mn1": ["127.0.1.1", "10.250.0.11"], "mn2": ["10.250.0.12"]}  # a node's own name: 127.0.1.1 first
    assert rendezvous_address(env, lambda h: debian.get(h, [])) == "10.250.0.11"
    own_name_only = {"mn1": ["127.0.1.1"]}
    launched = {**env, "SLURM_LAUNCH_NODE_IPADDR": "10.250.0.11"}  # where submitit's srun ran: the first node
    assert rendezvous_address(launched, lambda h: own_name_only.get(h, [])) == "10.250.0.11"
    with pytest.raises(RunError, match=r"its first node mn1 resolves to 127\.0\.1\.1 here .* set MASTER_ADDR"):
        rendezvous_address(env, lambda h: own_name_only.get(h, []))
    with pytest.raises(RunError, match="resolves to nothing"):
        rendezvous_address(env, lambda h: [])
    assert rendezvous_address({**env, "SLURM_JOB_NUM_NODES": "1"}, lambda h: own_name_only.get(h, [])) == "127.0.1.1"
    assert master_port("4242") == master_port("4242") != master_port("4243")
    assert 20000 <= master_port("123_4") < 60000


# --- on the test cluster ----------------------------------------------------------------------------------

def _status(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["status", str(path), *args, "--json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


SYNC_BN_ON_CPU = """
import sys
from mmengine.config import Config
from prove_jobs.executors import JOB_ENTRY
from prove_jobs.distributed import Rank, setup
cfg = Config(dict(sync_bn='torch', model=dict(type='X')))
notes = setup(cfg, Rank(0, 1, 0))
print(repr(cfg.sync_bn), cfg.model_wrapper_cfg.device_ids)
print(notes[-1], flush=True)
import torch.distributed as dist
dist.destroy_process_group()  # else gloo's threads may abort the exit ("terminate called without an active exception")
"""


def test_sync_bn_is_dropped_on_cpu_processes_with_a_line_saying_so(tmp_path: Path) -> None:
    """gloo on CPU cannot run SyncBN ("SyncBatchNorm expected input tensor to be on GPU"): the run trains with
    each process's own BN, and the note goes into the run's log (the payload logs it through the Runner)."""
    pytest.importorskip("mmengine", reason="a Config is mmengine's")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    env["MASTER_PORT"] = str(20000 + os.getpid() % 20000)  # one gloo group of one, on loopback
    done = subprocess.run([sys.executable, "-c", SYNC_BN_ON_CPU], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    settings, note = done.stdout.strip().splitlines()[-2:]
    assert settings == "None None"
    assert note.startswith("prove-jobs: sync_bn='torch' dropped: CPU processes (gloo) cannot run SyncBN")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)")
def test_a_two_rank_ddp_job_trains_one_run(tmp_path: Path, demo: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(demo)
    path = sweep_with(demo, 'partition = "gpu"\ngpus_per_node = 2\ncpus_per_task = 1\nmem_gb = 4\ntimeout_min = 10\n')
    args = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4"]
    assert main(["submit", str(path), *args, "--executor", "slurm"]) == 0
    assert main(["wait", str(path), *args, "--timeout", "600", "--poll", "1"]) == 0, _job_logs(demo)
    [row] = _status(path, capsys, *args)
    assert row["state"] == "completed" and row["iter"] == 20 and row["layout"] == "2 GPUs", row
    assert [p[0] for p in row["curve"]] == [10, 20]  # validated once per interval (rank 0), not once per rank
    run_dir = Path(str(row["run_dir"]))
    [start] = [p for p in run_dir.iterdir() if p.name[:8].isdigit()]
    log = read_or_empty(start / f"{start.name}.log")
    assert "Distributed training: True" in log and "GPU number: 2" in log, log[:3000]
    assert "batch_size=2," in (run_dir / "prove" / "config.py").read_text()  # DEMO_BS4's 4, over 2 ranks
    # two GPUs: rendered with SyncBN (mmengine's sync_bn); these CPU ranks (gloo) cannot run it, and say so
    assert "sync_bn = 'torch'" in (run_dir / "prove" / "config.py").read_text()
    assert "sync_bn='torch' dropped: CPU processes (gloo) cannot run SyncBN" in log, log[:3000]
    from prove_jobs.metadata import read_meta

    meta = read_meta(run_dir)
    assert meta is not None and meta.attempts == 1 and meta.layout == "2 GPUs"
    # GPU-hours: with accounting, sacct's allocated seconds x its gres/gpu count; without, the logs' span (the
    # node's clock) x the 2 GPUs the job asked for. The sweep's total is the last line of status.
    accounted = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
                                "--format=JobID,ElapsedRaw,AllocTRES", f"--jobs={row['job_id']}"],
                               capture_output=True, text=True)
    rows = [line.split("|") for line in accounted.stdout.splitlines() if line.strip()]
    if accounted.returncode == 0 and rows:
        assert all("gres/gpu=2" in tres for _, _, tres in rows), rows
        expected = sum(int(seconds) for _, seconds, _ in rows) * 2 / 3600
    else:
        expected = float(row["elapsed_s"]) * 2 / 3600
    assert row["gpu_hours"] == pytest.approx(expected, abs=1e-3) and row["gpu_hours"] > 0, (row["gpu_hours"], rows)
    assert main(["status", str(path), *args]) == 0
    table = capsys.readouterr().out
    assert "· 2 GPUs" in table and table.strip().splitlines()[-1].startswith("GPU-hours: ")
    assert main(["report", str(path), "--out", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| GPU-hours |" in report and "GPU-hours: " in report
    print(f"\nDDP log lines: {[line for line in log.splitlines() if 'Distributed' in line or 'GPU number' in line]}")


def _job_logs(root: Path) -> str:
    return "\n".join(f"--- {p}\n{read_or_empty(p)[-1500:]}" for p in sorted((root / "runs").rglob("*_log.*")))


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)")
def test_max_running_throttles_the_array_and_a_sweep_larger_than_max_array_size_is_split(
        tmp_path: Path, demo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from prove_jobs.scheduler import max_array_size

    limit = max_array_size()
    if limit is None or limit > 4:
        pytest.skip(f"the test cluster's MaxArraySize is {limit}; tests/cluster/slurm-up.sh sets 4")
    monkeypatch.chdir(demo)
    templates = demo / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "variants" / "DEMO_X.toml").write_text(
        'max_iters = 4\nbatch_size = 2\nlr = 0.01\nwarmup_iters = 1\nval_interval = 4\ncrop_size = [64, 64]\n')
    resources = 'partition = "gpu"\ngpus_per_node = 0\ncpus_per_task = 1\nmem_gb = 1\ntimeout_min = 10\n'
    throttled = sweep_with(demo, resources + "max_running = 1\n", variants='["DEMO_X"]')
    assert main(["submit", str(throttled), "--executor", "slurm"]) == 0
    job_id = str(_status(throttled, capsys)[0]["job_id"]).split("_")[0]
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", f"{job_id}"], capture_output=True, text=True,
                           check=True).stdout
    throttle = re.search(r"ArrayTaskThrottle=\d+", shown)
    assert throttle is not None and throttle.group(0) == "ArrayTaskThrottle=1", shown
    seen_running = 0
    deadline = time.monotonic() + 300
    while True:
        states = [row["scheduler_state"] for row in _status(throttled, capsys)]
        seen_running = max(seen_running, states.count("RUNNING"))
        if all(row["state"] == "completed" for row in _status(throttled, capsys)):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
    assert seen_running <= 1
    print(f"\n{throttle.group(0)} in `scontrol show job {job_id}`")

    # Six runs, MaxArraySize 4: two arrays (4 + 2), reported as one submission, all complete.
    for name in ("DEMO_Y", "DEMO_Z"):
        shutil.copy(templates / "variants" / "DEMO_X.toml", templates / "variants" / f"{name}.toml")
    six = sweep_with(demo, resources, variants='["DEMO_Y", "DEMO_Z", "DEMO_X2"]')
    shutil.copy(templates / "variants" / "DEMO_X.toml", templates / "variants" / "DEMO_X2.toml")
    capsys.readouterr()
    assert main(["submit", str(six), "--executor", "slurm"]) == 0
    assert main(["wait", str(six), "--timeout", "600", "--poll", "1"]) == 0
    rows = _status(six, capsys)
    assert len(rows) == 6 and all(row["state"] == "completed" for row in rows), rows
    arrays = {str(row["job_id"]).split("_")[0] for row in rows}
    assert len(arrays) == 2, sorted(str(row["job_id"]) for row in rows)


DDP_RESOURCES = SLURM_RESOURCES.replace("gpus_per_node = 1", "gpus_per_node = 2").replace("mem_gb = 2", "mem_gb = 4")


def _rank_pids(job_id: str) -> dict[int, int]:
    """The training processes of a SLURM job on this node: SLURM_PROCID -> pid (read from /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
            cmdline = (proc / "cmdline").read_text()
        except OSError:
            continue
        # each rank is `python -u -m prove_jobs.job_entry FOLDER` (submitit's entry, the pickle checked first)
        if env.get("SLURM_JOB_ID") == job_id and JOB_ENTRY in cmdline and "SLURM_PROCID" in env:
            found[int(env["SLURM_PROCID"])] = int(proc.name)
    return found


def _held_ddp_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> tuple[Sweep, Gate, Path]:
    """DEMO_LONG of demo_fcn_r18_tiny submitted as one 2-rank job, both ranks held after the checkpoint at 20."""
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(tmp_path)
    sweep = long_sweep(tmp_path, max_requeues=2, monkeypatch=monkeypatch, resources=DDP_RESOURCES)
    gate = Gate(sweep.templates_dir / "stall.gate")
    assert main(["submit", str(sweep.path), "--model", "demo_fcn_r18_tiny", "--executor", "slurm"]) == 0
    [row] = _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")
    run_dir = Path(str(row["run_dir"]))
    wait_until("both ranks to hold after the first checkpoint", lambda: gate.reached and checkpointed(run_dir) == 20)
    return sweep, gate, run_dir


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)")
def test_a_preempted_ddp_job_requeues_and_resumes_on_both_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sweep, gate, run_dir = _held_ddp_run(tmp_path, monkeypatch, capsys)
    [held] = _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")
    assert held["state"] == "running" and held["layout"] == "2 GPUs"
    assert held["queue_wait_s"] is not None and 0 <= held["queue_wait_s"] < 600  # SLURM's start - submit
    preempt()
    wait_until("the requeue", lambda: _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")[0]["state"]
               == "requeued")
    gate.open()
    wait_until("completion after the preemption",
               lambda: _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")[0]["state"] == "completed", 400)
    [row] = _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")
    assert [p[0] for p in row["curve"]] == [20, 40, 60, 80, 100, 120] and row["restarts"] == 1, row
    starts = sorted(p for p in run_dir.iterdir() if p.name[:8].isdigit())
    second = read_or_empty(starts[-1] / f"{starts[-1].name}.log")
    assert "GPU number: 2" in second and "resumed epoch: 0, iter: 20" in second, second[:3000]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)")
def test_a_rank_that_dies_ends_the_job_and_resubmit_resumes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from prove_jobs.locks import training_lock_held

    sweep, gate, run_dir = _held_ddp_run(tmp_path, monkeypatch, capsys)
    args = [str(sweep.path), "--model", "demo_fcn_r18_tiny"]
    job_id = str(_status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")[0]["job_id"])
    pids = wait_until("both ranks' processes", lambda: (found := _rank_pids(job_id)) and len(found) == 2 and found)
    os.kill(pids[1], signal.SIGKILL)
    wait_until("the job's end", lambda: _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")[0]["state"]
               == "failed", 120)
    wait_until("the training lock to be free", lambda: not training_lock_held(run_dir), 60)
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    shown = capsys.readouterr()
    assert "task 1" in shown.out + shown.err, shown  # srun names the rank that died
    gate.open()
    assert main(["resubmit", *args, "--failed", "--executor", "slurm"]) == 0
    wait_until("completion after the resubmit",
               lambda: _status(sweep.path, capsys, "--model", "demo_fcn_r18_tiny")[0]["state"] == "completed", 400)
    starts = sorted(p for p in run_dir.iterdir() if p.name[:8].isdigit())
    second = read_or_empty(starts[-1] / f"{starts[-1].name}.log")
    assert "GPU number: 2" in second and "resumed epoch: 0, iter: 20" in second, second[:3000]


def test_squeue_times_give_the_queue_wait_on_the_controllers_clock(fake_cluster: Path) -> None:
    from fake_scheduler import say

    from prove_jobs.scheduler import ask

    say(fake_cluster, "12_3 RUNNING %N=vm %V=2026-12-02T05:00:00 %S=2026-12-02T05:01:30",
        "13 PENDING %N= %r=Priority %V=2026-12-02T05:02:00 %S=N/A")
    answer = ask(["12_3", "13"])
    running, pending = answer.get("12_3"), answer.get("13")
    assert running is not None and pending is not None and running.node == "vm"
    assert running.started is not None and running.submitted is not None
    assert running.started - running.submitted == 90 and running.reason == ""
    assert pending.reason == "Priority" and pending.started is None
