"""Two real Unix users share one data root: a conflict names the holder, resubmit takes over after.

Needs root to create the users (``useradd``) and to run commands as them (``runuser``).
Each user runs the real CLI in its own interpreter, with this checkout and this venv's
site-packages on PYTHONPATH (the venv's own python may live under root's 0700 home).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, SWEEPS, checkpointed

from prove_jobs.locks import training_lock_held
from prove_jobs.metadata import read_meta
from prove_jobs.runs import TRAIN_LOCK
from prove_jobs.scheduler import slurm_available

GROUP = "prove_share"
USER_A, USER_B = "prove_a", "prove_b"
RUN_ARGS = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_SLOW"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating Unix users and running commands as them needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("runuser") is None,
                       reason="useradd/runuser (Debian's passwd and util-linux) are not installed"),
]


def _interpreter() -> str:
    """A python of this minor version that other users can execute (the venv's may sit in /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        probe = subprocess.run(["runuser", "-u", "nobody", "--", candidate, "-c", "pass"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    pytest.fail(f"no {version} executable by other users (tried the venv's and /usr/bin/{version})")


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    subprocess.run(["groupadd", "-f", GROUP], check=True)
    for user in (USER_A, USER_B):
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--no-create-home", "--gid", GROUP, "--shell", "/usr/sbin/nologin", user],
                           check=True)
    base = Path(tempfile.mkdtemp(prefix="prove-two-users-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["pkill", "-u", USER_A], capture_output=True)
        subprocess.run(["pkill", "-u", USER_B], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _setup(base: Path) -> dict[str, str]:
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(base / "data" / "cityscapes")
    runs = base / "runs"
    runs.mkdir()
    shutil.chown(runs, group=GROUP)
    runs.chmod(0o2775)  # setgid: everything below stays in the shared group
    # The source may sit in a folder other users cannot read (a clone under /root): copy it.
    src = base / "src"
    shutil.copytree(REPO / "prove_jobs", src / "prove_jobs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "job_templates", src / "job_templates")
    # A recipe long enough that A is still training while B looks, with a checkpoint every 10 iterations.
    (src / "job_templates" / "variants" / "DEMO_SLOW.toml").write_text(
        'max_iters = 2000\nbatch_size = 2\nlr = 0.01\nwarmup_iters = 5\nval_interval = 1000\n'
        'checkpoint_interval = 10\ncrop_size = [64, 64]\n'
    )
    demo = (SWEEPS / "demo.toml").read_text()
    (base / "slow.toml").write_text(demo.replace('variants = ["DEMO_REF", "DEMO_BS4"]', 'variants = ["DEMO_SLOW"]'))
    for path in [src, *src.rglob("*"), base / "slow.toml"]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return {"PYTHONPATH": f"{src}:{sysconfig.get_paths()['purelib']}", "DEMO_ROOT": str(base)}


def _job_log(base: Path) -> str:
    logs = sorted((base / "runs" / ".prove-jobs").rglob("*_log.err"))
    return logs[-1].read_text()[-2000:] if logs else "(no job log)"


def as_user(
    user: str, base: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    home = base / f"home-{user}"
    home.mkdir(exist_ok=True)
    shutil.chown(home, user=user, group=GROUP)
    variables = {"PATH": "/usr/bin:/bin", "HOME": str(home), "USER": user, "LOGNAME": user,
                 "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200", **env}
    command = ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in variables.items()),
               _interpreter(), "-m", "prove_jobs.cli", *args]
    # The user's home as working dir: a SLURM job starts in the submitter's cwd and must be able to.
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=str(home))


def user_sweep(user: str, base: Path, name: str = "slow.toml") -> str:
    """``user``'s own copy of the shared sweep file, in the user's own folder: each member of a group keeps
    hers, and runs are still the same runs (their identity is what they train, not where a sweep sits)."""
    home = base / f"home-{user}"
    home.mkdir(exist_ok=True)
    shutil.chown(home, user=user, group=GROUP)
    copy = home / name
    copy.write_text((base / name).read_text())
    shutil.chown(copy, user=user, group=GROUP)
    copy.chmod(0o644)
    return str(copy)


def as_user_shell(user: str, script: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", "sh", "-c", script], check=True, capture_output=True)


def _wait_for(what: str, condition: Callable[[], object], base: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen; last job log: {_job_log(base)}"
        time.sleep(0.2)


def _starts(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name[:8].isdigit())


def _first_train_step(start: Path) -> int | None:
    scalars = start / "vis_data" / "scalars.json"
    if not scalars.exists():
        return None
    steps = [json.loads(line)["step"] for line in scalars.read_text().splitlines() if '"loss"' in line]
    return min(steps) if steps else None


def test_user_b_meets_a_conflict_naming_a_and_resubmits_after_a_ends(shared: Path) -> None:
    pytest.importorskip("mmseg", reason="the train extra (mmsegmentation) is not installed")
    env = _env(shared)
    sweep_a, sweep = user_sweep(USER_A, shared), user_sweep(USER_B, shared)  # B's own copy: `sweep`
    run_dir = shared / "runs" / "DEMO_SLOW" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"

    # submit returns at once even with its output captured: the job holds none of its pipes.
    started = as_user(USER_A, shared, env, "submit", sweep_a, *RUN_ARGS, "--executor", "local", timeout=60)
    assert started.returncode == 0, started.stderr
    _wait_for("A's first checkpoint", lambda: checkpointed(run_dir) >= 10, shared)
    assert training_lock_held(run_dir) is True
    meta = read_meta(run_dir)
    assert meta is not None and meta.user == USER_A and meta.finished_at is None

    conflict = as_user(USER_B, shared, env, "submit", sweep, *RUN_ARGS, "--executor", "local")
    assert conflict.returncode == 1, conflict.stderr
    assert "lock conflict" in conflict.stderr and f"{USER_A}@" in conflict.stderr
    assert f"local job {meta.job_id}" in conflict.stderr

    shown = as_user(USER_B, shared, env, "status", sweep, *RUN_ARGS, "--json")
    [row] = json.loads(shown.stdout)
    assert row["state"] == "lock_conflict" and row["lock_holder"]["user"] == USER_A
    assert row["lock_holder"]["stale"] is False
    table = as_user(USER_B, shared, env, "status", sweep, *RUN_ARGS)
    assert f"Lock conflict ({USER_A})" in table.stdout

    still = as_user(USER_B, shared, env, "resubmit", sweep, "--lock-conflicts", "--executor", "local")
    assert still.returncode == 1 and f"still held: DEMO_SLOW/demo_fcn_r18_tiny by {USER_A}@" in still.stderr

    # B may not stop A's job: one line naming its owner, exit 1, and A trains on.
    refused = as_user(USER_B, shared, env, "cancel", sweep, *RUN_ARGS)
    assert refused.returncode == 1, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert f"local job {meta.job_id} belongs to {USER_A}" in line and "Traceback" not in refused.stderr
    assert training_lock_held(run_dir) is True and read_meta(run_dir) == meta
    # What A will train is A's: the group reads the rendered inputs, and cannot rewrite them.
    assert {(run_dir / "prove" / name).stat().st_mode & 0o777 for name in ("config.py", "model.py")} == {0o644}

    # A's job dies (its node crashed: killed, nothing recorded). A cancel would end the conflict
    # too, but a cancelled run stays cancelled (tests/test_newcomer.py): B's resubmit leaves it.
    os.killpg(int(str(meta.job_id)), signal.SIGKILL)
    _wait_for("the end of A's training", lambda: not training_lock_held(run_dir), shared, 30)
    # (prove/job.out and job.err are links to the latest job's logs: they move on to B's job by design)
    a_files = {p: p.stat().st_size for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink()
               and p.owner() == USER_A
               and p.suffix != ".pth" and p.name != "last_checkpoint" and "prove_" not in p.name
               # mmengine dumps the config to <work_dir>/config.py at every start (A's copy stays in its
               # <timestamp>/vis_data/config.py)
               and p.relative_to(run_dir) != Path("config.py")}

    retaken = as_user(USER_B, shared, env, "resubmit", sweep, "--lock-conflicts", "--executor", "local")
    assert retaken.returncode == 0, retaken.stderr
    assert "resubmitted DEMO_SLOW/demo_fcn_r18_tiny" in retaken.stderr
    # B's job resumes from A's last checkpoint: mmengine rewrites A's last_checkpoint (group-writable).
    _wait_for("B's resumed training", lambda: len(_starts(run_dir)) == 2 and _first_train_step(_starts(run_dir)[1]),
              shared)
    first_step = _first_train_step(_starts(run_dir)[1])
    assert first_step is not None and first_step > 10
    final = read_meta(run_dir)
    assert final is not None and final.user == USER_B and final.attempts == 2 and final.started_at is not None
    assert final.config_hash == meta.config_hash  # two copies of one sweep, in two folders: one run
    stopped = as_user(USER_B, shared, env, "cancel", sweep, *RUN_ARGS)
    assert stopped.returncode == 0, stopped.stderr
    # Nothing of A's was lost; both users wrote into the run dir.
    lost = [str(p) for p, size in a_files.items() if not p.exists() or p.stat().st_size < size]
    assert not lost, lost
    assert {p.owner() for p in run_dir.rglob("*") if p.is_file()} >= {USER_A, USER_B}
    assert (run_dir / TRAIN_LOCK).stat().st_mode & 0o060 == 0o060  # group read-write


def _env(shared: Path) -> dict[str, str]:
    """The users' environment, setting the shared folder up on first use (tests may run alone)."""
    if not (shared / "src").exists():
        return _setup(shared)
    return {"PYTHONPATH": f"{shared / 'src'}:{sysconfig.get_paths()['purelib']}", "DEMO_ROOT": str(shared)}


def test_a_lock_file_b_cannot_open_is_one_line_naming_its_owner(shared: Path) -> None:
    env = _env(shared)
    run_dir = shared / "runs" / "DEMO_BS4" / "baseline" / "cityscapes" / "demo_segformer_tiny"
    run_dir.mkdir(parents=True)
    shutil.chown(run_dir, group=GROUP)
    run_dir.chmod(0o2775)
    lock = run_dir / TRAIN_LOCK
    lock.write_text("")
    shutil.chown(lock, user=USER_A, group=GROUP)
    lock.chmod(0o600)
    refused = as_user(USER_B, shared, env, "submit", str(SWEEPS / "demo.toml"), "--model", "demo_segformer_tiny",
                      "--variant", "DEMO_BS4", "--executor", "local")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and f"owner: {USER_A}" in lines[0] and str(lock) in lines[0]
    assert not (run_dir / "prove_run.json").exists()



def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in [folder, *folder.rglob("*")]}


def test_links_b_plants_in_the_shared_root_never_redirect_a(shared: Path) -> None:
    """The data root is group-writable: B can plant links where A's submit will write. A's submit refuses
    them in one line naming the link, and nothing outside the data root (A's home) changes."""
    env = _env(shared)
    shutil.copy(SWEEPS / "demo.toml", shared / "demo.toml")
    sweep_a = user_sweep(USER_A, shared, "demo.toml")
    home_a = shared / f"home-{USER_A}"
    precious = home_a / "notes.txt"
    precious.write_text("A's own notes\n")
    shutil.chown(precious, user=USER_A, group=GROUP)
    precious.chmod(0o600)
    before = _snapshot(home_a)
    runs = shared / "runs" / "DEMO_REF" / "baseline" / "cityscapes"
    as_user_shell(USER_B, f"mkdir -p {runs}/demo_segformer_tiny {runs}/demo_fcn_r18_tiny/prove"
                          f" && ln -s {home_a} {runs}/demo_segformer_tiny/prove"
                          f" && ln -s {precious} {runs}/demo_fcn_r18_tiny/prove_run.json"
                          f" && ln -s {precious} {runs}/demo_fcn_r18_tiny/prove/job.out")
    try:
        for model, link in (("demo_segformer_tiny", "prove"), ("demo_fcn_r18_tiny", "prove_run.json")):
            refused = as_user(USER_A, shared, env, "submit", sweep_a, "--model", model, "--variant", "DEMO_REF",
                              "--executor", "local")
            assert refused.returncode == 2, refused.stderr
            [line] = refused.stderr.strip().splitlines()
            assert f"{runs / model / link}: a symbolic link" in line and f"made by {USER_B}" in line, line
            assert {p.name for p in (runs / model).iterdir()} == {link} | ({"prove"} if link != "prove" else set())
        assert _snapshot(home_a) == before  # nothing written, no mode changed, in A's home
        shown = as_user(USER_A, shared, env, "status", sweep_a, "--json")
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    finally:
        for model in ("demo_segformer_tiny", "demo_fcn_r18_tiny"):
            shutil.rmtree(runs / model, ignore_errors=True)


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)")
def test_on_slurm_b_queues_behind_a_and_takes_over_when_a_ends(shared: Path) -> None:
    pytest.importorskip("mmseg", reason="the train extra (mmsegmentation) is not installed")
    env = _env(shared)
    slow = (shared / "slow.toml").read_text()
    sweep_path = shared / "slurm_slow.toml"
    sweep_path.write_text(slow[: slow.index("[resources]")]
                          + '[resources]\npartition = "gpu"\ngpus_per_node = 1\ncpus_per_task = 1\nmem_gb = 2\n')
    # Each user submits from her own copy: the config hash must not depend on where the sweep sits,
    # or B's --after-holder is refused ("trains another config") and B's job would train over A's.
    sweep_a, sweep = user_sweep(USER_A, shared, sweep_path.name), user_sweep(USER_B, shared, sweep_path.name)
    args = ["--model", "demo_segformer_tiny", "--variant", "DEMO_SLOW"]
    run_dir = shared / "runs" / "DEMO_SLOW" / "baseline" / "cityscapes" / "demo_segformer_tiny"

    started = as_user(USER_A, shared, env, "submit", sweep_a, *args, "--executor", "slurm")
    assert started.returncode == 0, started.stderr
    _wait_for("A's first checkpoint on SLURM", lambda: checkpointed(run_dir) >= 10, shared)
    a_meta = read_meta(run_dir)
    assert a_meta is not None and a_meta.user == USER_A and a_meta.executor == "slurm" and a_meta.job_id

    conflict = as_user(USER_B, shared, env, "submit", sweep, *args, "--executor", "slurm")
    assert conflict.returncode == 1, conflict.stderr
    assert f"{USER_A}@" in conflict.stderr and f"slurm job {a_meta.job_id}" in conflict.stderr

    queued = as_user(USER_B, shared, env, "resubmit", sweep, *args, "--lock-conflicts", "--after-holder",
                     "--executor", "slurm")
    assert queued.returncode == 0, queued.stderr
    assert f"starts when {USER_A}'s job {a_meta.job_id} ends" in queued.stderr, queued.stderr
    b_job = queued.stderr.split("as slurm job ")[1].split(":")[0]
    job = subprocess.run(["scontrol", "show", "job", "--oneliner", b_job], capture_output=True, text=True,
                         check=True).stdout
    assert f"afterany:{a_meta.job_id}" in job and "JobState=PENDING" in job and "Reason=Dependency" in job
    assert f"UserId={USER_B}(" in job
    assert read_meta(run_dir) == a_meta  # A's claim untouched while A trains
    shown = as_user(USER_B, shared, env, "status", sweep, *args, "--json")
    [row] = json.loads(shown.stdout)
    assert row["state"] == "lock_conflict" and any(f"queued as slurm job {b_job}" in n for n in row["notes"])
    # B cannot cancel A's SLURM job: scancel refuses, prove-jobs says whose it is in one line, exit 1
    refused = as_user(USER_B, shared, env, "cancel", sweep, *args)
    assert refused.returncode == 1, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert f"SLURM job {a_meta.job_id} (job of {USER_A})" in line, line
    assert read_meta(run_dir) == a_meta

    ended = as_user(USER_A, shared, env, "cancel", sweep_a, *args)
    assert ended.returncode == 0, ended.stderr

    def b_trains() -> bool:
        meta = read_meta(run_dir)
        return bool(meta and meta.user == USER_B and meta.job_id == b_job and meta.started_at)

    _wait_for("B's queued job to take over", b_trains, shared, 120)
    _wait_for("B's first iterations", lambda: len(_starts(run_dir)) == 2 and _first_train_step(_starts(run_dir)[1]),
              shared)
    first_step = _first_train_step(_starts(run_dir)[1])
    assert first_step is not None and first_step > 10  # resumed from A's checkpoint
    after = as_user(USER_B, shared, env, "status", sweep, *args, "--json")
    [row] = json.loads(after.stdout)
    assert row["state"] == "running" and row["user"] == USER_B and not row["notes"]
    stopped = as_user(USER_B, shared, env, "cancel", sweep, *args)
    assert stopped.returncode == 0, stopped.stderr
    _wait_for("the end of B's job", lambda: not training_lock_held(run_dir), shared, 60)
    b_meta = read_meta(run_dir)
    assert b_meta is not None and b_meta.config_hash == a_meta.config_hash

