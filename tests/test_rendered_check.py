"""The job checks the rendered files it loads against the digests it carries (issue 19, item 1):
the take-over job's own rendering, DDP followers, links and FIFOs. Two real users: tests/test_trust_exec.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prove_jobs.identity import current_user
from prove_jobs.job_record import take_over
from prove_jobs.metadata import RunMeta, read_meta, write_meta
from prove_jobs.payload import TakeOver, TrainingJob
from prove_jobs.rendered_check import RenderedChanged, read_checked, sha256_text
from prove_jobs.runs import CONFIG_DIR

OURS = (("model.py", "model = dict(type='ours')\n"), ("config.py", "_base_ = ['./model.py']\nx = 1\n"))
DIGESTS = tuple((name, sha256_text(text)) for name, text in OURS)


def _prove(run_dir: Path, files: tuple[tuple[str, str], ...]) -> Path:
    folder = run_dir / "prove"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files:
        (folder / name).write_text(text)
    return folder


def test_a_take_over_job_writes_its_own_rendering_and_checks_what_it_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    _prove(run_dir, (("model.py", "holder's\n"), ("config.py", "holder's, her dataset root\n")))
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    # the holder's job 11 is gone without finishing: our queued job takes the run over
    write_meta(run_dir, RunMeta(model="m", variant="V", config_hash="c0ffee", user="alice", executor="slurm",
                                job_id="11", submitted_at=1.0))
    take = TakeOver("11", "c0ffee", "sweep.toml", OURS)
    assert take_over(run_dir, take, token="t-b", lock_mode="fcntl") is None  # claimed now, our files written
    meta = read_meta(run_dir)
    assert meta is not None and meta.user == current_user() and meta.token == "t-b"
    assert read_checked(run_dir / CONFIG_DIR, DIGESTS) == {name: text.encode() for name, text in OURS}


def test_a_ddp_follower_checks_the_config_before_it_loads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    folder = _prove(run_dir, OURS)
    write_meta(run_dir, RunMeta(model="m", variant="V", user=current_user(), token="t-a", submitted_at=1.0,
                                started_at=2.0))
    ran = tmp_path / "pwned"  # what the planted config does once mmengine loads it
    (folder / ".mine").write_text(f"open({str(ran)!r}, 'w').close()\n")
    os.replace(folder / ".mine", folder / "config.py")  # a member's file renamed over it
    for name, value in {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(name, value)  # rank 1 of 2, as srun starts it
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    with pytest.raises(RenderedChanged, match=r"config.py: changed since submit \(sha256 .*owner "):
        TrainingJob(str(run_dir), token="t-a", rendered=DIGESTS)()
    assert not ran.exists(), "a changed config reached mmengine"


@pytest.mark.parametrize("plant", ["link", "fifo", "huge"])
def test_a_link_a_fifo_or_a_huge_file_is_refused_at_once(tmp_path: Path, plant: str) -> None:
    folder = _prove(tmp_path, OURS[:1])
    target = folder / "config.py"
    if plant == "link":
        (tmp_path / "elsewhere.py").write_text(OURS[1][1])  # the right bytes, through a link: still refused
        target.symlink_to(tmp_path / "elsewhere.py")
    elif plant == "fifo":
        os.mkfifo(target)
    else:
        with open(target, "wb") as f:
            f.truncate(5 * 1024**3)  # sparse
    with pytest.raises(RenderedChanged, match=r"config\.py: "):
        read_checked(folder, DIGESTS)
