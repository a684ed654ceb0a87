"""A claim is owned by its submission: tokens, real racing processes, pids that get reused, clocks that differ.

Each test here failed on the main before issue 10 (the note on that issue quotes what each showed).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SWEEPS, claim, make_run, process_holding_lock, write_sweep

from prove_jobs.claims import LockHolder
from prove_jobs.cli import main
from prove_jobs.conflicts import read_conflicts, record_conflict
from prove_jobs.errors import ClaimMoved, RunError
from prove_jobs.identity import boot_id, current_user, process_start
from prove_jobs.metadata import read_meta
from prove_jobs.payload import TrainingJob
from prove_jobs.runs import META_FILE, META_MUTEX, Run

REPO = Path(__file__).resolve().parent.parent
RUN_JOB = """
import sys
from prove_jobs.payload import TrainingJob
print(TrainingJob(sys.argv[1], token=sys.argv[2])())
"""


def run_job(run_dir: Path, token: str) -> subprocess.CompletedProcess[str]:
    """A job of submission ``token`` started for ``run_dir``, in a process of its own (as submitit starts it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", RUN_JOB, str(run_dir), token], capture_output=True, text=True,
                          timeout=120, env=env)


# --- tokens ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("moved", ["taken over", "released", "cancelled"])
def test_a_job_whose_claim_moved_on_writes_nothing_and_does_not_train(tmp_path: Path, moved: str) -> None:
    run = make_run(tmp_path)
    if moved == "taken over":  # a take-over of the stale claim, or a Ctrl-C between sbatch and the job id
        claim(run, user="bob", token="t-bob", job_id="77")
    elif moved == "released":  # prove-jobs unlock --force while the job waited in the queue
        claim(run, released_at=time.time(), released_by="alice")
    else:
        claim(run, cancelled_at=time.time(), cancelled_by="alice")
    before = (run.run_dir / META_FILE).read_bytes()

    done = run_job(run.run_dir, "t-alice")

    assert done.returncode == 0, done.stderr
    assert "writes nothing and does not train" in done.stderr, done.stderr
    assert (run.run_dir / META_FILE).read_bytes() == before
    assert not [p for p in run.run_dir.iterdir() if p.name[:8].isdigit()]  # mmengine never started


def test_the_loser_of_a_lock_race_marks_nothing_on_the_winners_claim(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    claim(run, user="bob", token="t-bob")  # bob's job trains (it holds the training lock)
    before = (run.run_dir / META_FILE).read_bytes()
    with process_holding_lock(run.run_dir):
        done = run_job(run.run_dir, "t-alice")  # alice's late job of an older submission
    assert done.returncode != 0
    assert "another process is training this run" in done.stderr
    assert (run.run_dir / META_FILE).read_bytes() == before  # bob's claim is not marked failed


def test_a_write_with_a_stale_token_raises_and_leaves_the_file(tmp_path: Path) -> None:
    from prove_jobs.metadata import update_meta

    run = make_run(tmp_path)
    claim(run, token="t-new")
    before = (run.run_dir / META_FILE).read_bytes()
    with pytest.raises(ClaimMoved, match="no longer this submission's"):
        update_meta(run.run_dir, token="t-old", job_id="99")
    assert (run.run_dir / META_FILE).read_bytes() == before
    assert update_meta(run.run_dir, token="t-new", job_id="99").job_id == "99"


def test_a_submission_hands_its_token_to_its_job(tmp_path: Path) -> None:
    """``submit`` records a fresh token per claim and pickles it into the job (submitit's own pickle)."""
    pytest.importorskip("submitit")
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(tmp_path / "data" / "cityscapes")
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "DEMO_ROOT": str(tmp_path), "PYTHONPATH": str(REPO)}
    # a job that cannot start (an interpreter that exits at once): only what submit wrote is looked at
    sweep = (SWEEPS / "demo.toml").read_text().replace("[resources]", '[resources]\npython = "/bin/true"')
    sweep_path = write_sweep(tmp_path, sweep.replace('name = "demo"', f'name = "demo"\ntemplates = '
                                                                     f'{str(REPO / "job_templates")!r}'))
    done = subprocess.run([sys.executable, "-m", "prove_jobs.cli", "submit", str(sweep_path), "--executor", "local"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    import pickle

    tokens = set()
    for run_dir in [path.parent for path in (tmp_path / "runs").glob(f"*/*/*/*/{META_FILE}")]:
        meta = read_meta(run_dir)
        assert meta is not None and len(meta.token) == 16
        job_folder = tmp_path / "runs" / ".prove-jobs" / "submitit" / current_user() / str(meta.job_id)
        [pickled] = job_folder.glob("*_submitted.pkl")
        job = pickle.loads(pickled.read_bytes())
        assert job.function.token == meta.token
        tokens.add(meta.token)
    assert len(tokens) == 4
    folder = tmp_path / "runs" / ".prove-jobs" / "submitit" / current_user()
    assert folder.stat().st_mode & 0o777 == 0o750  # nobody else can plant a link where its jobs write
    assert folder.parent.stat().st_mode & 0o1000  # sticky: nobody else can rename it away and put hers there


# --- the conflicts file ----------------------------------------------------------------------------

RECORD = """
import sys, time
from pathlib import Path
from prove_jobs.claims import LockHolder
from prove_jobs.conflicts import record_conflict
run_dir, me, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
holder = LockHolder(user="carol", host="h", executor="slurm", job_id="1", pid=None, since=None, sweep="s.toml")
while time.time() < start:
    time.sleep(0.001)
for n in range(10):
    record_conflict(run_dir, holder, "s.toml", user=f"{me}-{n}")
"""


def test_eight_processes_recording_conflicts_on_one_run_at_once_lose_none(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    claim(run)
    start = time.time() + 3  # every interpreter has started by then: they race for real
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", RECORD, str(run.run_dir), f"user{i}", str(start)], env=env)
                for i in range(8)]
    assert [child.wait(timeout=120) for child in children] == [0] * 8
    recorded = read_conflicts(run.run_dir)
    assert len(recorded) == 80, sorted(recorded)
    assert {entry["holder"]["user"] for entry in recorded.values()} == {"carol"}


def test_a_conflict_recorded_while_the_mutex_is_held_waits_for_it(tmp_path: Path) -> None:
    """The record is a read-modify-write under the run's mutex: a writer holding it delays, and is not lost."""
    from filelock import FileLock

    run = make_run(tmp_path)
    claim(run)
    holder = LockHolder(user="carol", host="h", executor="slurm", job_id="1", pid=None, since=None, sweep="s")
    held = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\n"
                             "lock = FileLock(sys.argv[1])\nlock.acquire()\nprint('held', flush=True)\ntime.sleep(3)",
                             str(run.run_dir / META_MUTEX)], stdout=subprocess.PIPE, text=True)
    assert held.stdout is not None and held.stdout.readline().strip() == "held"
    started = time.monotonic()
    record_conflict(run.run_dir, holder, "s")
    assert time.monotonic() - started > 1  # it waited for the other process
    held.wait()
    assert set(read_conflicts(run.run_dir)) == {current_user()}
    assert FileLock(str(run.run_dir / META_MUTEX)).acquire(timeout=0)


# --- pids are reused -------------------------------------------------------------------------------

def test_a_pid_now_used_by_another_process_is_not_the_claims_job(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(tmp_path / "data" / "cityscapes")
    monkeypatch.setenv("DEMO_ROOT", str(tmp_path))
    sweep = str(SWEEPS / "demo.toml")
    args = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_REF"]
    run = Run(model="demo_fcn_r18_tiny", variant="DEMO_REF", method="baseline", dataset="cityscapes",
              data_root=tmp_path / "runs")
    run.run_dir.mkdir(parents=True)
    # someone's process, in a session of its own, that was given the pid the claim recorded
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        start = process_start(stranger.pid)
        assert start is not None
        claim(run, user=current_user(), job_id=str(stranger.pid), pid=stranger.pid, pid_start=start - 50,
              job_start=start - 50, boot_id=boot_id(), started_at=time.time())
        assert main(["cancel", sweep, *args]) == 0
        assert "no live job to cancel" in capsys.readouterr().err
        assert stranger.poll() is None  # not signalled
        assert main(["unlock", str(run.run_dir)]) == 0
        assert "released stale claim" in capsys.readouterr().err

        # the same, from another boot: the pid and its start time mean nothing after a reboot
        claim(run, user=current_user(), job_id=str(stranger.pid), pid=stranger.pid, pid_start=start,
              job_start=start, boot_id="another-boot")
        assert main(["unlock", str(run.run_dir)]) == 0
        assert stranger.poll() is None

        # the recorded process itself: cancelled
        claim(run, user=current_user(), job_id=str(stranger.pid), pid=stranger.pid, pid_start=start,
              job_start=start, boot_id=boot_id())
        assert main(["cancel", sweep, *args]) == 0
        assert "cancelled DEMO_REF/demo_fcn_r18_tiny" in capsys.readouterr().err
        assert stranger.wait(timeout=30) is not None
    finally:
        stranger.kill()
        stranger.wait()


# --- restarts and clocks ---------------------------------------------------------------------------

@pytest.mark.parametrize("login_clock", [+3600.0, -3600.0], ids=["login-ahead", "login-behind"])
def test_restarts_and_the_requeue_cap_ignore_the_login_nodes_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login_clock: float) -> None:
    """Three starts of one submission whose ``submitted_at`` came from a clock an hour off: restarts 0, 1,
    then the cap (max_requeues = 1) refuses the third. Each start is recorded as the job records it; between
    them the scheduler stopped the training (submitit then exits, SystemExit: nothing more is recorded)."""
    from prove_jobs.job_record import record_start

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    run = make_run(tmp_path)
    claim(run, user=current_user(), submitted_at=time.time() + login_clock, job_id="4242")
    for expected in (0, 1):
        record_start(run.run_dir, "t-alice", max_restarts=1)
        meta = read_meta(run.run_dir)
        assert meta is not None and meta.restarts == expected and meta.failed_at is None
    with pytest.raises(RunError, match=r"would be restart 2 and .*max_requeues is 1"):
        TrainingJob(str(run.run_dir), max_restarts=1, token="t-alice")()
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.failed_at is not None and meta.starts == 2 and meta.attempts == 2


def test_slurm_restart_count_is_slurms_own_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # requeued three times, never reached the payload's record
    run = make_run(tmp_path)
    claim(run, user=current_user(), executor="slurm", job_id="4242")
    with pytest.raises(RunError, match="would be restart 3 and"):
        TrainingJob(str(run.run_dir), max_restarts=2, token="t-alice")()


def test_the_requeue_signal_handler_waits_seconds_not_minutes_for_the_mutex(tmp_path: Path) -> None:
    """submitit's USR2 handler has 90 s (SLURM's --signal=USR2@90) before the kill: it may not spend them
    waiting for a metadata mutex someone holds; the requeue itself matters more than its record."""
    run = make_run(tmp_path)
    claim(run, user=current_user())
    held = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\n"
                             "lock = FileLock(sys.argv[1])\nlock.acquire()\nprint('held', flush=True)\ntime.sleep(600)",
                             str(run.run_dir / META_MUTEX)], stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout is not None and held.stdout.readline().strip() == "held"
        started = time.monotonic()
        again = TrainingJob(str(run.run_dir), token="t-alice").checkpoint()
        waited = time.monotonic() - started
    finally:
        held.kill()
        held.wait()
    assert again.function.token == "t-alice"  # the requeued job is the same submission
    assert waited < 30, waited  # today's wait is 120 s: past the signal's 90 s, the job is killed unrecorded


# --- filelock --------------------------------------------------------------------------------------

NO_FLOCK = """
import errno, fcntl, sys
def no_flock(fd, operation):
    raise OSError(errno.ENOSYS, "Function not implemented")
fcntl.flock = no_flock  # as on a filesystem without flock (some NFS and FUSE mounts)
from prove_jobs.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_filesystem_without_flock_is_one_line_pointing_to_soft_mode(tmp_path: Path) -> None:
    """filelock 4 would fall back to marker files by itself (a warning, then two hosts each "holding" it)."""
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(tmp_path / "data" / "cityscapes")
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "DEMO_ROOT": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", NO_FLOCK, "submit", str(SWEEPS / "demo.toml"), "--model",
                           "demo_fcn_r18_tiny", "--variant", "DEMO_REF", "--executor", "local"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert 'lock_mode = "soft"' in line and META_MUTEX in line
    assert not list((tmp_path / "runs").rglob(META_FILE))


# --- the SLURM words -------------------------------------------------------------------------------

def test_every_slurm_word_means_one_thing_to_locks_and_to_the_screen() -> None:
    """A job SLURM may still run is alive for the claim and never shown ended; an ended one is never alive."""
    from prove_jobs.states import SLURM_STATES, RunState, slurm_state

    ended = {RunState.FAILED, RunState.CANCELLED, RunState.TIMEOUT, RunState.COMPLETED}
    for word in SLURM_STATES:
        state, alive = slurm_state(word)
        assert (state in ended) is (not alive) or state is None, word
    assert slurm_state("PREEMPTED") == (RunState.REQUEUED, True)  # squeue shows it just before the requeue
    assert slurm_state("PREEMPTED", from_accounting=True) == (RunState.FAILED, False)
    assert slurm_state("SIGNALING")[0] is RunState.RUNNING and slurm_state("RESIZING")[0] is RunState.RUNNING
    assert slurm_state("SOME_NEW_WORD") == (None, True)  # a lock is never broken on a guess


# --- what the run trains -----------------------------------------------------------------------------

def test_two_copies_of_one_sweep_in_two_folders_have_one_config_hash(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    text = (SWEEPS / "demo.toml").read_text()
    templates = f'templates = {str(REPO / "job_templates")!r}'
    hashes = []
    for user, body in (("alice", text), ("bob", text), ("carol", text.replace("lr = ", "lr = 2 * ")),):
        folder = tmp_path / user
        folder.mkdir()
        body = body.replace('name = "demo"', f'name = "demo"\n{templates}')
        # each keeps the dataset in her own home: a per-user path that trains the same data
        body = body.replace("${DEMO_ROOT}/data/cityscapes", str(folder / "cityscapes"))
        path = write_sweep(folder, body)
        assert main(["plan", str(path), "--json", "--data-root", str(tmp_path / "runs")]) == 0
        hashes.append({(r["model"], r["variant"]): r["config_hash"] for r in json.loads(capsys.readouterr().out)})
    assert hashes[0] == hashes[1]
    assert len(set(hashes[0].values())) == 4
    if hashes[2] != hashes[0]:  # the third copy changed a recipe (when the demo sweep sets lr itself)
        assert set(hashes[2].values()).isdisjoint(hashes[0].values())


def test_no_flock_error_names_lock_errno() -> None:
    from prove_jobs.locks import lock_error

    message = str(lock_error(Path("/x/prove_run.json.lock"), OSError(errno.ENOSYS, "Function not implemented")))
    assert message.startswith("/x/prove_run.json.lock: ") and 'lock_mode = "soft"' in message
