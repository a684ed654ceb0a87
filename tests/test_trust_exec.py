"""What a job runs is what its submitter made (issue 19, item 1): two real Unix users, the real CLI.

A member of the group (``prove_b``) tries to make the victim's (``prove_a``) job run her code: by
making the victim's job folder herself, by planting a ``%j`` link where the local executor
writes, by renaming her own file over the victim's rendered config after submit.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import time
from pathlib import Path

import pytest
from conftest import SWEEPS
from test_two_users import USER_A, USER_B, _env, as_user, as_user_shell, shared, user_sweep

from prove_jobs.metadata import read_meta

__all__ = ["shared"]  # the fixture, shared with tests/test_two_users.py

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating Unix users and running commands as them needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("runuser") is None,
                       reason="useradd/runuser (Debian's passwd and util-linux) are not installed"),
]

ARGS = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_REF"]


def _sweep(base: Path, resources: str = "") -> str:
    (base / "demo.toml").write_text((SWEEPS / "demo.toml").read_text().replace("[resources]",
                                                                              f"[resources]\n{resources}"))
    return user_sweep(USER_A, base, "demo.toml")


def _run_dir(base: Path) -> Path:
    return base / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"


def _jobs(base: Path) -> Path:
    return base / "runs" / ".prove-jobs" / "submitit"


def _trap(base: Path) -> Path:
    """A folder of B's that A could write into: whatever lands there went through B's link."""
    trap = base / "trap"
    trap.mkdir(exist_ok=True)
    shutil.chown(trap, user=USER_B)
    trap.chmod(0o777)
    return trap


def _wait(what: str, condition: object, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.2)


def _clean(base: Path) -> None:
    for path in (_jobs(base).parent, base / "runs" / "DEMO_REF", base / "trap"):
        shutil.rmtree(path, ignore_errors=True)


def test_a_job_folder_a_member_made_for_the_victim_is_refused(shared: Path) -> None:
    env = _env(shared)
    sweep = _sweep(shared)
    folder = _jobs(shared) / USER_A
    try:
        # B makes the shared folder as it should be (sticky), and A's folder as her own, open to all
        as_user_shell(USER_B, f"mkdir -p {folder} && chmod 3777 {folder.parent} && chmod 2777 {folder}")
        started = time.monotonic()
        refused = as_user(USER_A, shared, env, "submit", sweep, *ARGS, "--executor", "local")
        seconds = time.monotonic() - started
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert f"{folder}: your job folder belongs to {USER_B}" in line, line
        assert not (shared / "runs" / "DEMO_REF").exists()  # no claim, no rendered config
        assert list(folder.iterdir()) == []  # no pickle in B's folder
        print(f"refused in {seconds:.2f} s")

        # B's folder, made private: still B's, still refused; a link in its place too
        as_user_shell(USER_B, f"chmod 0755 {folder}")
        refused = as_user(USER_A, shared, env, "submit", sweep, *ARGS, "--executor", "local")
        assert refused.returncode == 2 and f"belongs to {USER_B}" in refused.stderr, refused.stderr
        as_user_shell(USER_B, f"rmdir {folder} && ln -s {_trap(shared)} {folder}")
        refused = as_user(USER_A, shared, env, "submit", sweep, *ARGS, "--executor", "local")
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert f"{folder}: a symbolic link (made by {USER_B})" in line, line
        assert list((shared / "trap").iterdir()) == []
    finally:
        _clean(shared)


def test_a_planted_percent_j_link_gets_nothing_written_through_it(shared: Path) -> None:
    env = _env(shared)
    sweep = _sweep(shared)
    folder = _jobs(shared) / USER_A
    trap = _trap(shared)
    try:
        as_user_shell(USER_A, f"mkdir -p {folder} && chmod 1775 {folder.parent} && chmod 0750 {folder}")
        os.symlink(trap, folder / "%j")  # a link where submitit's job folder pattern points, made by B
        os.chown(folder / "%j", pwd.getpwnam(USER_B).pw_uid, -1, follow_symlinks=False)
        started = as_user(USER_A, shared, env, "submit", sweep, *ARGS, "--executor", "local")
        assert started.returncode == 0, started.stderr
        meta = read_meta(_run_dir(shared))
        assert meta is not None and meta.job_id
        job = folder / str(meta.job_id)
        _wait("the job's log", lambda: (job / f"{meta.job_id}_0_log.err").is_file())
        stopped = as_user(USER_A, shared, env, "cancel", sweep, *ARGS)
        assert stopped.returncode == 0, stopped.stderr
        assert list(trap.iterdir()) == []  # nothing written through B's link
        assert (folder / "%j").is_symlink()
        assert (job / "controller.log").stat().st_uid == pwd.getpwnam(USER_A).pw_uid
        assert not any(p.name == "%j" and not p.is_symlink() for p in _jobs(shared).rglob("*"))
    finally:
        _clean(shared)


def test_a_config_renamed_over_the_victims_runs_nothing_and_fails_the_run(shared: Path) -> None:
    pytest.importorskip("mmseg", reason="the train extra (mmsegmentation) is not installed")
    env = _env(shared)
    # the job starts 4 s after submit returns: time enough for B's rename
    sweep = _sweep(shared, 'setup = ["sleep 4"]')
    run_dir = _run_dir(shared)
    marker = _trap(shared) / "ran-as-victim"
    try:
        started = as_user(USER_A, shared, env, "submit", sweep, *ARGS, "--executor", "local")
        assert started.returncode == 0, started.stderr
        config = run_dir / "prove" / "config.py"
        planted = f"open({str(marker)!r}, 'w').close()\n" + config.read_text()
        as_user_shell(USER_B, f"cat > {config.parent}/.mine.py <<'EOF'\n{planted}EOF\n"
                              f"mv -f {config.parent}/.mine.py {config}")
        assert config.stat().st_uid == pwd.getpwnam(USER_B).pw_uid
        clock = time.monotonic()
        waited = as_user(USER_A, shared, env, "wait", sweep, *ARGS, "--timeout", "120", "--poll", "0.5",
                         timeout=180)
        seconds = time.monotonic() - clock
        assert waited.returncode == 1, (waited.stdout, waited.stderr)
        assert not marker.exists()  # nothing of B's config ran as A
        meta = read_meta(run_dir)
        assert meta is not None and meta.failed_at is not None and meta.started_at is None
        assert meta.error is not None and "\n" not in meta.error
        assert f"{config}: changed since submit" in meta.error and f"owner {USER_B}" in meta.error, meta.error
        assert not any(p.is_dir() and p.name[:8].isdigit() for p in run_dir.iterdir())  # mmengine never started
        shown = as_user(USER_A, shared, env, "status", str(run_dir))
        assert shown.returncode == 0, shown.stderr
        assert "changed since submit" in shown.stdout and USER_B in shown.stdout, shown.stdout
        listed = as_user(USER_A, shared, env, "status", sweep, *ARGS, "--json")
        assert listed.returncode == 0, listed.stderr
        [row] = json.loads(listed.stdout)
        assert row["state"] == "failed" and "changed since submit" in row["error"]
        print(f"failed {seconds:.1f} s after submit (4 s of it the setup's sleep)")
    finally:
        _clean(shared)
