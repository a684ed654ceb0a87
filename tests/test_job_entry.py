"""A job loads only the pickle its own user submitted (prove_jobs.job_entry): a member who renames
``.prove-jobs`` away (the data root is group-writable) and puts her own pickle where a queued job of
yours will look for it runs nothing as you. The entry runs here as a real subprocess, as the node runs it."""

from __future__ import annotations

import inspect
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

JOB_ID = "4242"


def _pickle(path: Path, marker: Path) -> None:
    """A submitit job whose running makes ``marker`` (os.mkdir: pickled by reference, importable anywhere)."""
    from submitit.core.utils import DelayedSubmission

    DelayedSubmission(os.mkdir, str(marker)).dump(path)
    path.chmod(0o644)


def _run_entry(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(SUBMITIT_LOCAL_JOB_ID=JOB_ID, SUBMITIT_LOCAL_GLOBALID="0", SUBMITIT_LOCAL_LOCALID="0",
               SUBMITIT_LOCAL_NTASKS="1", SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_LOCAL_NODEID="0",
               SUBMITIT_EXECUTOR="local")
    return subprocess.run([sys.executable, "-u", "-m", "prove_jobs.job_entry", str(folder)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_users_own_pickle_runs(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    _pickle(folder / f"{JOB_ID}_submitted.pkl", tmp_path / "ran")
    done = _run_entry(folder)
    assert (tmp_path / "ran").is_dir(), done.stdout + done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize("planted", ["another user's", "group-writable", "a hard link", "a symbolic link"])
def test_a_planted_pickle_runs_nothing(tmp_path: Path, planted: str) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    target = folder / f"{JOB_ID}_submitted.pkl"
    _pickle(tmp_path / "hers.pkl", tmp_path / "pwned")
    if planted == "another user's":
        nobody = pwd.getpwnam("nobody")
        os.chown(tmp_path / "hers.pkl", nobody.pw_uid, nobody.pw_gid)
        os.rename(tmp_path / "hers.pkl", target)
    elif planted == "group-writable":
        (tmp_path / "hers.pkl").chmod(0o664)
        os.rename(tmp_path / "hers.pkl", target)
    elif planted == "a hard link":
        os.link(tmp_path / "hers.pkl", target)
    else:
        target.symlink_to(tmp_path / "hers.pkl")
    done = _run_entry(folder)
    assert not (tmp_path / "pwned").exists(), "the planted pickle ran"
    assert "not loaded" in done.stdout + done.stderr or "a link is not followed" in done.stdout + done.stderr, (
        done.stdout + done.stderr)


def test_submitit_loads_the_job_only_through_delayed_submission_load() -> None:
    """The entry replaces DelayedSubmission.load: submitit's process_job must still load through it."""
    from submitit.core import submission

    source = inspect.getsource(submission.process_job)
    assert "utils.DelayedSubmission.load(paths.submitted_pickle)" in source
    assert "pickle_load(" not in source and "pickle.load" not in source


def test_both_executors_run_jobs_through_the_entry(tmp_path: Path) -> None:
    from prove_jobs.executors import make_executor
    from prove_jobs.spec import Resources

    for kind in ("local", "slurm"):
        executor = make_executor(kind, tmp_path / "%j", Resources(), job_name="x")
        assert "-m prove_jobs.job_entry" in executor._submitit_command_str


def test_a_checkpointed_job_is_written_again_as_only_its_user_may_write_it(tmp_path: Path) -> None:
    """submitit re-pickles a preempted job before it requeues, under the job's umask (the sweep's 0002): the
    requeued start then refused its own 0664 pickle. The entry writes it 0600 (a SLURM test preempts for real)."""
    from submitit.core import job_environment
    from submitit.core.utils import DelayedSubmission

    from prove_jobs.job_entry import dump_private, load_checked

    assert "ckpt_delayed.dump(tmp)" in inspect.getsource(job_environment._checkpoint)
    old = os.umask(0o002)
    try:
        dump_private(DelayedSubmission(os.mkdir, str(tmp_path / "x")), tmp_path / "job.pkl")
    finally:
        os.umask(old)
    assert (tmp_path / "job.pkl").stat().st_mode & 0o777 == 0o600
    assert isinstance(load_checked(tmp_path / "job.pkl"), DelayedSubmission)
