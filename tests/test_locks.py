"""Claims, the training lock, stale claims and conflicts: real processes, real files, real filelock."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
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
    SWEEPS,
    TEMPLATES,
    checkpointed,
    claim,
    cli_status,
    demo_sweep_with,
    err_lines,
    group_threads_alive,
    make_run,
    process_holding_lock,
    said,
    stall_templates,
)

from prove_jobs.cli import main
from prove_jobs.conflicts import recorded_conflict
from prove_jobs.control import cancel
from prove_jobs.errors import LockConflict
from prove_jobs.identity import current_user
from prove_jobs.locks import training_lock_held
from prove_jobs.metadata import read_meta, update_meta
from prove_jobs.payload import TrainingJob
from prove_jobs.runs import META_FILE, TRAIN_LOCK
from prove_jobs.spec import load_sweep
from prove_jobs.states import RunState


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def unlocked(*argv: str | Path) -> tuple[int, str]:
    """``prove-jobs unlock ARGV``: its exit status and its stderr, where it says what it did with each run dir
    (``RUN_DIR: released ...``; ``warning: RUN_DIR: held by ...`` for a live claim left alone; ``error: ...``)."""
    done = said("unlock", *argv)
    return done.code, done.err


def test_training_lock_is_freed_by_the_kernel_when_its_holder_is_killed(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert training_lock_held(run.run_dir) is False
    with process_holding_lock(run.run_dir) as child:
        assert training_lock_held(run.run_dir) is True
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert training_lock_held(run.run_dir) is False
    # filelock leaves the file: its existence must never be read as "held"
    assert (run.run_dir / TRAIN_LOCK).exists()
    assert oct((run.run_dir / TRAIN_LOCK).stat().st_mode & 0o777) == oct(0o664)


def test_payload_refuses_to_train_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    claim(run)
    with process_holding_lock(run.run_dir), pytest.raises(LockConflict, match="another process is training"):
        TrainingJob(str(run.run_dir), token="t-alice")()
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.failed_at is not None and meta.started_at is None
    assert meta.error is not None and meta.error.startswith("lock conflict")


def test_stale_live_and_forced_unlock(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    where = f"{run.run_dir}: "  # each line of `unlock` begins with the run dir it speaks of
    checkpoint = run.run_dir / "iter_20.pth"
    checkpoint.write_bytes(b"weights")
    claim(run, pid=dead_pid())
    [status] = cli_status(run.run_dir)
    assert status["lock_holder"] is not None and status["lock_holder"]["stale"] is True
    code, err = unlocked(run.run_dir)
    [what] = err_lines(err, where)
    assert code == 0 and what.startswith("released stale claim by "), err
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.released_at is not None and meta.released_by == current_user()
    assert cli_status(run.run_dir)[0]["lock_holder"] is None
    assert unlocked(run.run_dir) == (0, f"{where}no claim\n")

    claim(run)  # live: this very process
    code, err = unlocked(run.run_dir)
    [what] = err_lines(err, f"warning: {where}")
    assert code == 1 and what.startswith("held by ") and "live" in what, err  # left alone: exit 1
    assert cli_status(run.run_dir)[0]["lock_holder"] is not None  # the claim stands
    with process_holding_lock(run.run_dir):
        code, err = unlocked("--force", run.run_dir)
    [error] = err_lines(err, f"error: {where}")
    assert code == 2 and "holds the training lock" in error, err  # a RunError: exit 2
    assert cli_status(run.run_dir)[0]["lock_holder"] is not None
    code, err = unlocked("--force", run.run_dir)  # the claim is live, but nobody trains
    [what] = err_lines(err, where)
    assert code == 0 and what.startswith("released claim by "), err
    assert cli_status(run.run_dir)[0]["lock_holder"] is None
    assert checkpoint.read_bytes() == b"weights"


@pytest.mark.parametrize("garbage", [b"", b'{"model": "m", "var', b"\xff\xfe not json", b"[1, 2]"])
def test_corrupt_claim_is_moved_aside_only_when_nobody_trains(tmp_path: Path, garbage: bytes) -> None:
    run = make_run(tmp_path)
    (run.run_dir / META_FILE).write_bytes(garbage)
    (run.run_dir / "last_checkpoint").write_text("/x/iter_20.pth")
    with process_holding_lock(run.run_dir):
        code, err = unlocked(run.run_dir)
    [error] = err_lines(err, "error: ")
    assert code == 2 and re.search(r"corrupt lock \(.*prove_run.json\)", error), err  # a RunError: exit 2
    assert (run.run_dir / META_FILE).read_bytes() == garbage
    code, err = unlocked(run.run_dir)
    [what] = err_lines(err, f"{run.run_dir}: ")
    assert code == 0 and what.startswith("corrupt lock ") and "moved aside" in what, err
    aside = list(run.run_dir.glob(f"{META_FILE}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert (run.run_dir / "last_checkpoint").read_text() == "/x/iter_20.pth"
    # status reports a corrupt file as a note, never a crash
    (run.run_dir / META_FILE).write_bytes(garbage)
    [status] = cli_status(run.run_dir)
    assert any("corrupt" in note for note in status["notes"])


def test_cli_unlock_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    claim(run)
    assert main(["unlock", str(run.run_dir)]) == 1
    assert main(["unlock", "--stale", str(run.run_dir)]) == 0
    assert "live" in capsys.readouterr().err
    assert main(["unlock", str(tmp_path / "nothing")]) == 2
    assert "no prove_run.json" in capsys.readouterr().err


# --- the race: 8 interpreters submit one run at the same moment ---------------------------------

def _race_worker(barrier: multiprocessing.synchronize.Barrier, demo_root: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    os.environ["DEMO_ROOT"] = demo_root
    err = io.StringIO()
    args = ["submit", str(SWEEPS / "demo.toml"), "--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4",
            "--executor", "local"]
    barrier.wait()
    with contextlib.redirect_stderr(err):
        code = main(args)
    out.put((code, err.getvalue()))


@pytest.mark.slow
def test_eight_racing_submitters_start_exactly_one_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prove_jobs.demo_data import make_demo_dataset

    ctx = multiprocessing.get_context("spawn")
    contenders, rounds = 8, 20
    data = make_demo_dataset(tmp_path / "data" / "cityscapes")
    for round_no in range(rounds):
        demo_root = tmp_path / f"round{round_no}"
        (demo_root / "runs").mkdir(parents=True)
        (demo_root / "data").mkdir()
        (demo_root / "data" / "cityscapes").symlink_to(data)  # submit checks the dataset is there
        barrier, out = ctx.Barrier(contenders), ctx.Queue()
        workers = [ctx.Process(target=_race_worker, args=(barrier, str(demo_root), out)) for _ in range(contenders)]
        for worker in workers:
            worker.start()
        results = [out.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        monkeypatch.setenv("DEMO_ROOT", str(demo_root))
        sweep = load_sweep(SWEEPS / "demo.toml")
        run = sweep.runs(["demo_fcn_r18_tiny"], ["DEMO_BS4"])[0]
        meta = read_meta(run.run_dir)
        cancel([run])  # the winner's job: not needed beyond its start
        assert meta is not None and meta.job_id is not None
        winners = [err for code, err in results if code == 0]
        losers = [err for code, err in results if code == 1]
        assert len(winners) == 1 and len(losers) == contenders - 1, (round_no, results)
        assert f"as local job {meta.job_id}" in winners[0]
        for err in losers:
            # all one user: the losers meet the winner's job as their own, not as a conflict
            assert "already running as your local job" in err and f"local job {meta.job_id}" in err, (round_no, err)
        folder = sweep.data_root / ".prove-jobs" / "submitit" / current_user()
        jobs = [p for p in folder.iterdir() if p.name.isdigit()]
        assert len(jobs) == 1, (round_no, jobs)
        assert recorded_conflict(run.run_dir) is None  # all one user: own job, nothing to record


# --- kill -9, stale claim, resubmit --lock-conflicts resumes --------------------------------------

needs_training = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mmseg") is None, reason="the train extra (mmsegmentation) is not installed"
)


@pytest.mark.slow
@needs_training
def test_kill_9_frees_the_lock_and_resubmit_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(tmp_path / "data" / "cityscapes")
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("DEMO_ROOT", str(tmp_path))
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    gate = stall_templates(templates, 20, monkeypatch)  # held after iteration 20 until the gate opens
    sweep_file = str(demo_sweep_with(tmp_path, templates))
    sweep = load_sweep(Path(sweep_file))
    run = sweep.runs(["demo_fcn_r18_tiny"], ["DEMO_REF"])[0]
    submit_argv = ["submit", sweep_file, *run.options.split(), "--executor", "local"]
    assert main(submit_argv) == 0
    [first_job] = err_lines(capsys.readouterr().err, f"submitted {run.name} as local job ")
    # The same run again from this user: not a conflict, the user's own live job (nothing recorded); exit 1, as
    # for any run left unsubmitted without --skip-done.
    assert main(submit_argv) == 1
    err = capsys.readouterr().err
    assert err_lines(err, "submitted ") == [] and err_lines(err, "warning: lock conflict: ") == []
    [running] = err_lines(err, f"{run.name}: already running as your local job ")
    assert running.split(" ", 1)[0] == first_job
    assert recorded_conflict(run.run_dir) is None
    # As if alice had submitted it (tests/test_two_users.py has two real users): a conflict naming her job.
    update_meta(run.run_dir, user="alice")
    assert main(submit_argv) == 1
    err = capsys.readouterr().err
    assert err_lines(err, "submitted ") == []
    # "<user>@<host>, local job <id> since <time>; not submitted": the holder as LockHolder.describe() says it
    [held] = err_lines(err, f"warning: lock conflict: {run.name} is held by ")
    user, where = held.split("@", 1)
    assert re.search(rf", local job {first_job}\b", where), held
    assert user == "alice"

    deadline = time.monotonic() + 240  # a bound for a hung test, not a measure of speed
    while not gate.reached:
        assert time.monotonic() < deadline, "the training did not reach iteration 20"
        time.sleep(0.2)
    # mmengine names a checkpoint in last_checkpoint only once it is fully written: the pointer,
    # not the .pth appearing, says there is something to resume from.
    assert checkpointed(run.run_dir) == 20
    assert training_lock_held(run.run_dir) is True
    assert first_job.isdigit()
    os.killpg(int(first_job), signal.SIGKILL)
    while group_threads_alive(int(first_job)):
        assert time.monotonic() < deadline, "the killed job's threads did not exit"
        time.sleep(0.05)
    assert training_lock_held(run.run_dir) is False  # "at once": the kernel dropped it with the last thread
    gate.open()

    assert main(["status", sweep_file, "--model", run.model, "--variant", run.variant, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["state"] == "lock_conflict"
    assert row["lock_holder"]["stale"] is True and row["lock_holder"]["job_id"] == first_job

    # --wait: until no conflict is left, then until the resubmitted job has ended, as submit --wait
    assert main(["resubmit", sweep_file, "--lock-conflicts", "--executor", "local", "--wait", "--poll", "1"]) == 0
    err = capsys.readouterr().err
    assert "resubmitted DEMO_REF/demo_fcn_r18_tiny" in err and "1 run(s) ended: 1 completed" in err
    final = read_meta(run.run_dir)
    assert final is not None and final.finished_at is not None and final.attempts == 2
    [status] = cli_status(sweep_file, *run.options.split())
    assert status["state"] == RunState.COMPLETED.key and status["iter"] == 40 and status["lock_holder"] is None
    assert recorded_conflict(run.run_dir) is None
    starts = sorted(p for p in run.run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit())
    second_start = [json.loads(line) for line in (starts[-1] / "vis_data" / "scalars.json").read_text().splitlines()]
    assert min(r["step"] for r in second_start if "loss" in r) > 20  # resumed, not restarted
    assert main(["resubmit", sweep_file, "--lock-conflicts"]) == 0
    assert "no lock conflicts" in capsys.readouterr().err
