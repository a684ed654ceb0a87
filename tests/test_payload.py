"""The payload trains a demo model for real, records its run metadata and resumes after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mmseg", reason="training needs the train extra (torch, mmengine, mmsegmentation)")

from conftest import demo_run_dir

from prove_jobs.job_record import take_over
from prove_jobs.metadata import RunMeta, read_meta, write_meta
from prove_jobs.payload import TrainingJob

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def make_run(tmp_path: Path, model: str) -> Path:
    """A demo run rendered by prove-jobs itself (DEMO_REF: 40 iterations, a val and a checkpoint every 20)."""
    run_dir = demo_run_dir(tmp_path, model, "DEMO_REF")
    write_meta(run_dir, RunMeta(model=model, variant="DEMO_REF"))
    return run_dir


def val_records(run_dir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(run_dir.glob("*/vis_data/scalars.json")):
        records += [r for r in map(json.loads, path.read_text().splitlines()) if "mIoU" in r]
    return records


def test_trains_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    run_dir = make_run(tmp_path, "demo_segformer_tiny")
    assert TrainingJob(str(run_dir), threads=2)() == "completed DEMO_REF/demo_segformer_tiny at iter 40"
    records = val_records(run_dir)
    assert [r["step"] for r in records] == [20, 40]
    assert all(0 < r["mIoU"] <= 100 and 0 < r["aAcc"] <= 100 for r in records)
    assert records[-1]["mIoU"] > 15  # 5 classes present: predicting one class scores about 9
    meta = read_meta(run_dir)
    assert meta is not None and meta.attempts == 1 and meta.job_id == "4242" and meta.pid == os.getpid()
    assert meta.started_at is not None and meta.finished_at is not None and meta.failed_at is None
    assert (run_dir / "iter_40.pth").is_file()


def test_failure_is_recorded(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "demo_fcn_r18_tiny")
    model_file = run_dir / "prove" / "model.py"
    model_file.write_text(model_file.read_text() + "model = dict(type='NoSuchSegmentor')\n")
    with pytest.raises(Exception, match="NoSuchSegmentor"):
        TrainingJob(str(run_dir))()
    meta = read_meta(run_dir)
    assert meta is not None and meta.failed_at is not None and meta.finished_at is None
    assert meta.error is not None and "NoSuchSegmentor" in meta.error


# The child stalls right after saving iter_20.pth, so the SIGKILL lands after a checkpoint but
# before the end, every time (40 demo iterations otherwise take about a second).
CHILD = """
import sys, time
from mmengine.runner import Runner
from prove_jobs.payload import TrainingJob

save = Runner.save_checkpoint
def save_then_stall(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if self.iter == 20:
        print("saved 20", flush=True)
        time.sleep(600)
Runner.save_checkpoint = save_then_stall
TrainingJob(sys.argv[1], threads=1)()
"""

RESUME = "import sys; from prove_jobs.payload import TrainingJob; print(TrainingJob(sys.argv[1])())"


def test_resumes_after_sigkill(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "demo_fcn_r18_tiny")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last_checkpoint").is_file() or "iter_20" not in (run_dir / "last_checkpoint").read_text():
            assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
            assert time.monotonic() < deadline, "no iter_20 checkpoint within 120 s"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (run_dir / "iter_40.pth").exists()
    # last_checkpoint holds an absolute path (mmengine); fine, runs are never moved
    assert (run_dir / "last_checkpoint").read_text().strip() == str(run_dir / "iter_20.pth")

    again = subprocess.run(
        [sys.executable, "-c", RESUME, str(run_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "completed DEMO_REF/demo_fcn_r18_tiny at iter 40" in again.stdout
    assert "resumed epoch: 0, iter: 20" in again.stdout + again.stderr
    assert "weights_only" not in again.stdout + again.stderr
    assert val_records(run_dir)[-1]["step"] == 40
    meta = read_meta(run_dir)
    assert meta is not None and meta.attempts == 2 and meta.finished_at is not None and meta.failed_at is None


def test_resume_point_trusts_the_pointer_then_the_newest_checkpoint(tmp_path: Path) -> None:
    from prove_jobs.resume import resume_point

    assert resume_point(tmp_path) is None  # a fresh run starts from scratch
    for n in (8, 16, 24):
        (tmp_path / f"iter_{n}.pth").write_bytes(b"x")
    # no pointer: killed while writing its first checkpoint, which may be cut short
    assert resume_point(tmp_path) is None
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_16.pth"))
    assert resume_point(tmp_path) == tmp_path / "iter_16.pth"
    # killed while mmengine rewrote the pointer: it is empty, the newest numbered one is taken
    (tmp_path / "last_checkpoint").write_text("")
    assert resume_point(tmp_path) == tmp_path / "iter_24.pth"
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "moved-away.pth"))
    assert resume_point(tmp_path) == tmp_path / "iter_24.pth"


def test_restarts_are_counted_and_capped(tmp_path: Path) -> None:
    from prove_jobs.errors import RunError
    from prove_jobs.metadata import update_meta

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # the job trained once in this submission and was stopped; SLURM starts it again and again
    write_meta(run_dir, RunMeta(model="m", variant="V", submitted_at=100.0, started_at=200.0, attempts=1, starts=1))
    with pytest.raises(RunError, match=r"would be restart 1 and .*max_requeues is 0"):
        TrainingJob(str(run_dir), max_restarts=0)()
    meta = read_meta(run_dir)
    assert meta is not None and meta.failed_at is not None and meta.attempts == 1  # nothing trained
    update_meta(run_dir, failed_at=None, starts=3)  # started three times under this submission
    with pytest.raises(RunError, match="would be restart 3 and"):
        TrainingJob(str(run_dir), max_restarts=2)()


def test_a_job_queued_behind_a_holder_that_completed_the_run_does_not_train_it(tmp_path: Path) -> None:
    from prove_jobs.errors import RunError
    from prove_jobs.payload import TakeOver

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    done = RunMeta(model="m", variant="V", config_hash="c0ffee", user="alice", job_id="11", finished_at=5.0)
    write_meta(run_dir, done)
    message = TrainingJob(str(run_dir), take_over=TakeOver("11", "c0ffee", "sweep.toml"))()
    assert message == "already completed by alice (job 11): not trained again"
    assert read_meta(run_dir) == done  # the holder's record stays as it was
    # the holder completed another config in this run dir: refused, and its record is not touched
    with pytest.raises(RunError, match="another config"):
        TrainingJob(str(run_dir), take_over=TakeOver("11", "beef", "sweep.toml"))()
    assert read_meta(run_dir) == done


def test_a_take_over_job_leaves_a_run_claimed_meanwhile_and_keeps_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prove_jobs.identity import current_host, current_user
    from prove_jobs.payload import TakeOver

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    take = TakeOver("11", "c0ffee", "sweep.toml")
    # a third party claimed the run after the holder (job 11) ended: its live local job keeps it
    third = RunMeta(model="m", variant="V", config_hash="c0ffee", user="carol", executor="local",
                    host=current_host(), pid=os.getpid(), job_id="55", submitted_at=1.0)
    write_meta(run_dir, third)
    message = TrainingJob(str(run_dir), take_over=take)()  # the job, as submitit calls it on the node
    assert message == "held by carol (job 55) since we were queued: not started"
    assert read_meta(run_dir) == third
    # SLURM requeued this very job after it took the run over: it is ours, it trains on
    ours = RunMeta(model="m", variant="V", config_hash="c0ffee", user=current_user(), executor="slurm",
                   job_id="77", submitted_at=1.0, started_at=2.0)
    write_meta(run_dir, ours)
    assert take_over(run_dir, take, token="", lock_mode="fcntl") == ""  # already ours: nothing to claim
    assert read_meta(run_dir) == ours


CRAFT = """
import sys, torch
from mmengine.logging.history_buffer import HistoryBuffer


class Get:  # pickles as getattr(obj, name): the path from an allowed class to builtins
    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


torch.save({"message_hub": Get(Get(HistoryBuffer.__init__, "__globals__"), "__builtins__")}, sys.argv[1])
"""
START = """
import sys
from prove_jobs.payload import TrainingJob
TrainingJob(sys.argv[1], threads=1)()
"""


def test_a_crafted_checkpoint_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    """A group member drops an iter_N.pth whose pickle reaches builtins through getattr, and points
    last_checkpoint at it: the colleague's resume refuses it in one line naming it, and trains nothing."""
    run_dir = make_run(tmp_path, "demo_fcn_r18_tiny")
    planted = run_dir / "iter_20.pth"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", CRAFT, str(planted)], check=True, env=env, timeout=120)
    (run_dir / "last_checkpoint").write_text(str(planted))

    done = subprocess.run([sys.executable, "-c", START, str(run_dir)], capture_output=True, text=True, env=env,
                          timeout=300)

    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert f"{planted}: refused as a checkpoint to resume from" in last, done.stderr[-2000:]
    assert "refused getattr(HistoryBuffer, '__init__')" in last  # the first step towards its __globals__
    meta = read_meta(run_dir)
    assert meta is not None and meta.failed_at is not None and str(planted) in (meta.error or "")
    assert not [p for p in run_dir.iterdir() if p.name[:8].isdigit()]  # mmengine never started


def test_mmengine_checkpoints_pass_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The restricted getattr still lets a real mmengine checkpoint through (the resume tests train on it)."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run_dir = make_run(tmp_path, "demo_fcn_r18_tiny")
    assert TrainingJob(str(run_dir), threads=2)() == "completed DEMO_REF/demo_fcn_r18_tiny at iter 40"
    from prove_jobs.resume import allow_mmengine_checkpoints, check_checkpoint

    allow_mmengine_checkpoints()
    check_checkpoint(run_dir / "iter_20.pth")
    check_checkpoint(run_dir / "iter_40.pth")
