"""Light on the controller: ``status --watch`` asks the scheduler at most every N seconds, for the view's own
jobs, with the fields it shows; between answers the runs' own records still win.

A fake ``squeue``/``sacct`` on PATH logs every call (tests/fake_scheduler.py); the clock is faked, so a
watch of minutes takes a second: ``time.sleep`` moves it on and, at the end, is the Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_scheduler import calls, slurm_runs

from prove_jobs.cli import build_parser, main
from prove_jobs.metadata import RunMeta, read_meta, write_meta
from prove_jobs.poll import DEFAULT_EVERY_S

FORMAT = "--format=%i|%T|%N|%r|%V|%S"  # job, state, node, pending reason, submit and start times


class Clock:
    """``time.monotonic`` and ``time.sleep`` of a watch that ends (Ctrl-C) ``stop_s`` seconds in; ``at``: what
    happens meanwhile, each once the clock has passed its second. Only the watch's own sleeps move the
    clock (a file lock's retries sleep as they do)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_s: float,
                 at: dict[float, Callable[[], None]] | None = None) -> None:
        self.start = self.now = 1000.0
        self.stop_s = stop_s
        self.at = dict(at or {})
        self.real_sleep = time.sleep
        monkeypatch.setattr(time, "monotonic", lambda: self.now)
        monkeypatch.setattr(time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        if sys._getframe(1).f_globals.get("__name__") != "prove_jobs.dashboard":
            self.real_sleep(seconds)
            return
        self.now += seconds
        for when in sorted(w for w in self.at if self.now - self.start >= w):
            self.at.pop(when)()
        if self.now - self.start >= self.stop_s:
            raise KeyboardInterrupt


@pytest.fixture
def fake(fake_cluster: Path) -> Path:
    return fake_cluster


def frames(out: str) -> list[dict[str, str]]:
    """``--watch --json``'s lines: per frame, each run's state by model."""
    return [{row["model"]: row["state"] for row in json.loads(line)} for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize(("flag", "every"), [([], 30), (["--scheduler-every", "10"], 10)])
def test_watch_asks_the_scheduler_at_most_every_n_seconds(tmp_path: Path, fake: Path, flag: list[str], every: int,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    jobs = slurm_runs(root, 10)
    Clock(monkeypatch, stop_s=120)
    assert main(["status", "--root", str(root), "--watch", "2", *flag]) == 0
    out = capsys.readouterr().out
    assert out.count("Ctrl-C to quit") == 60  # redrawn every 2 s, from the logs
    squeues = calls(fake, "squeue")
    assert len(squeues) == 120 // every, squeues  # at 0, 30, 60, 90 s (or every 10 s)
    assert all(f"--jobs={','.join(sorted(jobs))}" in call for call in squeues)
    assert calls(fake, "sacct") == []  # squeue knew every job
    assert f"scheduler asked 18 s ago (at most every {every} s)" in out or every != 30
    assert f"scheduler asked 8 s ago (at most every {every} s)" in out


def test_the_flag_wants_seconds_and_says_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--root", ".", "--watch", "2", "--scheduler-every", "0"])
    assert "--scheduler-every" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "default 30" in " ".join(capsys.readouterr().out.split())
    assert build_parser().parse_args(["status", "x"]).scheduler_every == DEFAULT_EVERY_S == 30


def test_squeue_is_asked_about_the_views_open_jobs_with_the_fields_status_shows(
        tmp_path: Path, fake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    jobs = slurm_runs(root, 3)
    slurm_runs(root, 1, array="777", variant="W")  # another variant's run below the same root
    first = root / "V" / "baseline" / "cityscapes" / "model00"
    write_meta(first, RunMeta(**{**read_meta(first).to_json(), "finished_at": 200.0}))  # type: ignore[arg-type,union-attr]
    assert main(["status", "--root", str(root), "--variant", "V", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["completed", "running", "running"]
    [squeue] = calls(fake, "squeue")
    assert f"--jobs={jobs[1]},{jobs[2]}" in squeue  # not the finished run's, not the other variant's
    assert FORMAT in squeue  # no %u: who submitted is the run's metadata's word
    assert rows[1]["node"] == "gpu01" and rows[1]["queue_wait_s"] == 60


def _edit(run_dir: Path, **changes: object) -> None:
    write_meta(run_dir, RunMeta(**{**read_meta(run_dir).to_json(), **changes}))  # type: ignore[arg-type,union-attr]


def test_between_answers_a_runs_own_record_wins(tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    jobs = slurm_runs(root, 5)
    dirs = [root / "V" / "baseline" / "cityscapes" / f"model{i:02d}" for i in range(5)]
    _edit(dirs[2], started_at=None, attempts=0)  # still queued
    (fake / "states").write_text(f"{jobs[2]} PENDING\n")

    def meanwhile() -> None:
        # what SLURM and the jobs do at 4 s: squeue would say so too, but is not asked until 30 s
        _edit(dirs[0], finished_at=time.time())
        _edit(dirs[1], failed_at=time.time(), error="RuntimeError: CUDA error")
        _edit(dirs[2], started_at=time.time() + 1, attempts=1)
        _edit(dirs[3], requeued_at=time.time() + 1)  # the signal: it asked to be requeued
        _edit(dirs[4], job_id="4300", started_at=None, attempts=0)  # resubmitted: a job squeue was not asked about
        (fake / "states").write_text(f"{jobs[0]} GONE\n{jobs[1]} GONE\n{jobs[3]} PENDING\n4300 PENDING\n")

    Clock(monkeypatch, stop_s=40, at={4: meanwhile})
    assert main(["status", "--root", str(root), "--watch", "2", "--json"]) == 0
    seen = frames(capsys.readouterr().out)
    assert len(seen) == 20
    assert seen[0] == {"model00": "running", "model01": "running", "model02": "pending", "model03": "running",
                       "model04": "running"}
    after = {"model00": "completed", "model01": "failed", "model02": "running", "model03": "requeued",
             "model04": "pending"}
    assert seen[2] == after, seen[2]  # at 4 s, from the runs' records; the answer of 0 s is reused
    assert seen[15] == after  # at 30 s squeue is asked again, and says the same
    assert len(calls(fake, "squeue")) == 2
    assert calls(fake, "squeue")[1][-1] == f"--jobs={','.join(sorted([jobs[2], jobs[3], '4300']))}"


def test_a_controller_that_does_not_answer_is_not_asked_every_frame(tmp_path: Path, fake: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    slurm_runs(root, 3)
    (fake / "down").touch()
    Clock(monkeypatch, stop_s=60)
    assert main(["status", "--root", str(root), "--watch", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("Ctrl-C to quit") == 30 and out.count("scheduler unreachable") == 30
    assert len(calls(fake, "squeue")) == 2  # at 0 and 30 s: not once per frame, each up to its 20 s timeout
