"""Checkpoint at the signal: a job warned by SLURM (USR2) or preempted (SIGTERM) saves at the next iteration
boundary and requeues; the next start's first iteration is the one after. Never requeued once cancelled.

Driven through the CLI: the local executor (submitit's local controller requeues a task that exits 144, as
SLURM would), and the real test cluster: preemption by the ``urgent`` partition (one and two ranks), a
partition whose preemption cancels (``gpu-cancel``), a real time limit, and ``prove-jobs cancel``.
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
from conftest import LONG_VARIANT, SWEEPS, TEMPLATES, preempt, read_or_empty, scontrol_job, wait_until

from prove_jobs.cli import main
from prove_jobs.metadata import read_meta
from prove_jobs.save_at_signal import SignalWatch, stop_is_due
from prove_jobs.scheduler import slurm_available

MODEL = "demo_fcn_r18_tiny"
PACE_HOOK = """
# added by tests/test_save_at_signal.py: each iteration takes at least {seconds} s
custom_imports = dict(imports=['stall_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='Pace', seconds={seconds})]
"""
SAVED = re.compile(r"saved iter_(\d+)\.pth at iteration (\d+); the next start resumes at iteration (\d+)")
slurm = pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)")


def paced_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resources: str, *, max_iters: int = 120,
                seconds: float = 0.15) -> Path:
    """DEMO_PACED (``max_iters``, a checkpoint every 20) of the demo models, each iteration ``seconds`` long,
    every iteration logged."""
    from prove_jobs.demo_data import make_demo_dataset

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    for model in (templates / "models").glob("*.py"):
        model.write_text(model.read_text() + PACE_HOOK.format(seconds=seconds))
    (templates / "variants" / "DEMO_PACED.toml").write_text(LONG_VARIANT.format(max_iters=max_iters))
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    make_demo_dataset(tmp_path / "data" / "cityscapes")
    (tmp_path / "runs").mkdir()
    text = (SWEEPS / "demo.toml").read_text()
    text = text[: text.index("[resources]")] + resources
    text = text.replace("log_interval = 5", "log_interval = 1")
    text = text.replace('variants = ["DEMO_REF", "DEMO_BS4"]', 'variants = ["DEMO_PACED"]\ntemplates = "templates"')
    path = tmp_path / "paced.toml"
    path.write_text(text.replace("${DEMO_ROOT:-demo}", str(tmp_path)))
    return path


def run_dir_of(tmp_path: Path) -> Path:
    [meta] = [p for p in (tmp_path / "runs").rglob("prove_run.json")]
    return meta.parent


def trained_to(run_dir: Path) -> int:
    """The last iteration the current start logged (0 before any)."""
    starts = sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit())
    if not starts:
        return 0
    lines = read_or_empty(starts[-1] / "vis_data" / "scalars.json").splitlines()
    steps = [json.loads(line)["step"] for line in lines if line.startswith("{") and '"loss"' in line]
    return max(steps, default=0)


def first_iterations(run_dir: Path) -> list[int]:
    """Each start's first trained iteration, in order."""
    firsts = []
    for start in sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit()):
        lines = read_or_empty(start / "vis_data" / "scalars.json").splitlines()
        steps = [json.loads(line)["step"] for line in lines if line.startswith("{") and '"loss"' in line]
        if steps:
            firsts.append(min(steps))
    return firsts


def saved_at_signal(run_dir: Path) -> list[int]:
    """The iterations the job saved at a signal, from its stderr."""
    return [int(m.group(2)) for m in SAVED.finditer(read_or_empty(run_dir / "prove" / "job.err"))]


def status_row(sweep: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["status", str(sweep), "--model", MODEL, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    return dict(row)


def test_the_stop_waits_for_a_validation_due_and_never_stops_at_the_last_iteration() -> None:
    class Loop:
        max_iters, val_interval, val_begin = 120, 20, 1
        runner = type("Runner", (), {"val_loop": object()})()

    assert stop_is_due(Loop(), 33) and stop_is_due(Loop(), 21)
    assert not stop_is_due(Loop(), 40)  # its validation follows: stopping here would skip it on resume
    assert not stop_is_due(Loop(), 120)
    Loop.runner.val_loop = None
    assert stop_is_due(Loop(), 40)


def test_a_forked_worker_ignores_the_signal_its_parent_handles() -> None:
    watch = SignalWatch(pid=os.getpid() + 1)  # as in a dataloader worker forked after install
    with watch.installed():
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.05)
    assert not watch.pending


@pytest.mark.slow
def test_usr2_saves_at_the_next_iteration_and_the_requeued_start_resumes_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(tmp_path)
    sweep = paced_sweep(tmp_path, monkeypatch, "[resources]\ngpus_per_node = 0\ncpus_per_task = 1\n"
                        "timeout_min = 30\n")
    assert main(["submit", str(sweep), "--model", MODEL, "--executor", "local"]) == 0
    run_dir = run_dir_of(tmp_path)
    wait_until("iteration 25", lambda: trained_to(run_dir) >= 25, 240)
    meta = read_meta(run_dir)
    assert meta is not None and meta.pid
    os.kill(meta.pid, signal.SIGUSR2)  # what SLURM's --signal=USR2@90 sends before the time limit
    assert main(["wait", str(sweep), "--model", MODEL, "--timeout", "300", "--poll", "1"]) == 0
    [k] = saved_at_signal(run_dir)
    assert k % 20, f"saved at {k}: a periodic checkpoint's iteration (the signal is not due there)"
    assert (run_dir / f"iter_{k}.pth").is_file()
    assert first_iterations(run_dir) == [1, k + 1]  # no iteration trained twice
    row = status_row(sweep, capsys)
    assert row["state"] == "completed" and row["restarts"] == 1
    assert [p[0] for p in row["curve"]] == [20, 40, 60, 80, 100, 120]  # every validation once
    err = read_or_empty(run_dir / "prove" / "job.err")
    assert "USR2 received: saving a checkpoint at the end of this iteration" in err
    assert f"requeued, it resumes from iter_{k}.pth" in err
    print(f"\nsignalled after iteration >= 25; saved at {k}; the next start's first iteration {k + 1}")


def _slurm_signal_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                       resources: str, stop: str, *, max_iters: int = 120, seconds: float = 0.15) -> tuple[Path, int]:
    """Submit the paced sweep, stop its job after iteration 25 (``stop``: ``urgent`` or ``time``), and wait
    for it to complete; returns the run dir and the iteration saved at the signal."""
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(tmp_path)
    sweep = paced_sweep(tmp_path, monkeypatch, resources, max_iters=max_iters, seconds=seconds)
    assert main(["submit", str(sweep), "--model", MODEL, "--executor", "slurm"]) == 0
    run_dir = run_dir_of(tmp_path)
    wait_until("iteration 25", lambda: trained_to(run_dir) >= 25, 300)
    if stop == "urgent":
        preempt()
    wait_until("the save at the signal", lambda: saved_at_signal(run_dir), 240)
    assert main(["wait", str(sweep), "--model", MODEL, "--timeout", "600", "--poll", "1"]) == 0, \
        read_or_empty(run_dir / "prove" / "job.err")[-3000:]
    k = saved_at_signal(run_dir)[0]
    assert first_iterations(run_dir)[:2] == [1, k + 1], (k, first_iterations(run_dir))
    row = status_row(sweep, capsys)
    assert row["state"] == "completed" and int(str(row["restarts"])) >= 1, row
    return run_dir, k


@pytest.mark.slurm
@pytest.mark.slow
@slurm
def test_preempted_by_the_urgent_partition_resumes_at_the_next_iteration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    resources = '[resources]\npartition = "gpu"\ngpus_per_node = 1\ncpus_per_task = 1\nmem_gb = 2\ntimeout_min = 10\n'
    _, k = _slurm_signal_case(tmp_path, monkeypatch, capsys, resources, "urgent")
    print(f"\npreempted (urgent, PreemptMode=REQUEUE): saved at {k}, resumed at {k + 1}; "
          f"before this, resumed at {k // 20 * 20 + 1} ({k % 20} iterations trained twice)")


@pytest.mark.slurm
@pytest.mark.slow
@slurm
def test_a_two_rank_job_preempted_resumes_at_the_next_iteration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    resources = '[resources]\npartition = "gpu"\ngpus_per_node = 2\ncpus_per_task = 1\nmem_gb = 4\ntimeout_min = 10\n'
    run_dir, k = _slurm_signal_case(tmp_path, monkeypatch, capsys, resources, "urgent")
    err = read_or_empty(run_dir / "prove" / "job.err")
    assert err.count("saved iter_") == 1, err[-3000:]  # rank 0 alone writes it
    print(f"\ntwo ranks preempted: saved at {k}, resumed at {k + 1}")


@pytest.mark.slurm
@pytest.mark.slow
@slurm
def test_a_partition_that_preempts_by_cancelling_gets_the_job_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if "gpu-cancel" not in subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True,
                                          text=True).stdout:
        pytest.skip("the test cluster has no gpu-cancel partition (tests/cluster/slurm-up.sh adds it)")
    resources = ('[resources]\npartition = "gpu-cancel"\ngpus_per_node = 1\ncpus_per_task = 1\nmem_gb = 2\n'
                 'timeout_min = 10\n')
    run_dir, k = _slurm_signal_case(tmp_path, monkeypatch, capsys, resources, "urgent")
    meta = read_meta(run_dir)
    assert meta is not None and meta.restarts == 1
    print(f"\npreempted (gpu-cancel, PreemptMode=CANCEL): requeued by the job itself, saved at {k}, resumed at "
          f"{k + 1}")


@pytest.mark.slurm
@pytest.mark.slow
@slurm
def test_a_time_limit_warning_saves_and_a_cancel_is_never_requeued(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mmseg", reason="training needs the train extra")
    monkeypatch.chdir(tmp_path)
    # 2 minutes: SLURM's USR2@90 (up to 60 s early) lands 30-90 s in, while the paced training goes on
    resources = ('[resources]\npartition = "gpu"\ngpus_per_node = 1\ncpus_per_task = 1\nmem_gb = 2\ntimeout_min = 2\n'
                 'max_requeues = 5\n')
    sweep = paced_sweep(tmp_path, monkeypatch, resources, max_iters=2000, seconds=0.3)
    assert main(["submit", str(sweep), "--model", MODEL, "--executor", "slurm"]) == 0
    run_dir = run_dir_of(tmp_path)
    wait_until("the save at the time limit's warning", lambda: saved_at_signal(run_dir), 300)
    k = saved_at_signal(run_dir)[0]
    wait_until("the second start", lambda: len(first_iterations(run_dir)) >= 2, 240)
    assert first_iterations(run_dir)[:2] == [1, k + 1]
    meta = read_meta(run_dir)
    assert meta is not None and meta.job_id
    job_id = meta.job_id
    wait_until("iteration k + 5", lambda: trained_to(run_dir) >= k + 5, 120)
    assert main(["cancel", str(sweep), "--model", MODEL]) == 0  # scancel: SIGTERM, then the kill
    time.sleep(15)  # a requeue would show by now: pending again (cred_expire=10 on the test cluster)
    state = scontrol_job(job_id).get("JobState", "") if _known(job_id) else "gone"
    assert state in ("CANCELLED", "gone"), state
    err = read_or_empty(run_dir / "prove" / "job.err")
    assert "SIGTERM while the job is" in err and "not requeued" in err, err[-2000:]
    row = status_row(sweep, capsys)
    assert row["state"] == "cancelled", row
    print(f"\ntime limit warning: saved at {k}, resumed at {k + 1}; cancelled afterwards and not requeued")


def _known(job_id: str) -> bool:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True).returncode == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
