"""Issue 20: one set of time words. `status`'s Elapsed, `elapsed_s` in --json and the report's wall time are one
number: the time the starts that produced the result ran, each from its first training record to its last line;
an abandoned start, a start a restart from scratch replaced, and the gaps between starts do not count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prove_jobs.cli import main


def _line(ts: str, message: str) -> str:
    return f"2026/01/01 {ts} - mmengine - INFO - {message}\n"


def _train(ts: str, it: int) -> str:
    return _line(ts, f"Iter(train) [{it:>4}/40]  lr: 1.0000e-02  eta: 0:00:10  time: 0.5000  data_time: 0.0100  "
                     "memory: 300  loss: 1.0000")


VAL = "Iter(val) [1/1]    aAcc: 90.0000  mIoU: 50.0000  mAcc: 60.0000  data_time: 0.0100  time: 0.2000"


def _run(run_dir: Path, starts: dict[str, list[str]]) -> Path:
    for stamp, lines in starts.items():
        (run_dir / stamp).mkdir(parents=True)
        (run_dir / stamp / f"{stamp}.log").write_text("".join(lines))
    return run_dir


def _elapsed(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> float:
    assert main(["status", str(run_dir), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["state"] == "completed" and row["iter"] == 40, row
    return float(row["elapsed_s"])


def test_a_cancel_an_abandoned_start_and_a_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run(tmp_path / "V" / "baseline" / "cityscapes" / "m", {
        # trained 10..20, cancelled after its checkpoint
        "20260101_000000": [_line("00:00:05", "Config: ..."), _train("00:00:10", 10), _train("00:00:20", 20),
                            _line("00:00:21", "Saving checkpoint at 20 iterations")],
        # resubmitted, killed while it loaded: trained nothing
        "20260101_000100": [_line("00:01:00", "Config: ..."), _line("00:01:05", "Load checkpoint from ...")],
        # resumed at 20, finished
        "20260101_000200": [_line("00:02:05", "resumed epoch: 0, iter: 20"), _train("00:02:10", 30),
                            _train("00:02:20", 40), _line("00:02:21", VAL),
                            _line("00:02:22", "Saving checkpoint at 40 iterations")],
    })
    assert _elapsed(run_dir, capsys) == 11 + 12  # was 132: the first record to the last line of any start
    assert main(["report", "--root", str(tmp_path), "--format", "json"]) == 0
    [time] = json.loads(capsys.readouterr().out)["times"]
    assert time["wall_seconds"] == 23.0  # the report's wall time is status's Elapsed


def test_a_restart_from_scratch_replaces_the_start_before_it(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run(tmp_path / "V" / "baseline" / "cityscapes" / "m", {
        "20260101_000000": [_train("00:00:10", 10), _train("00:00:20", 20)],  # failed; its iterations trained again
        "20260101_000100": [_train("00:01:10", 10), _train("00:01:20", 20), _train("00:01:30", 30),
                            _train("00:01:40", 40), _line("00:01:41", "Saving checkpoint at 40 iterations")],
    })
    assert _elapsed(run_dir, capsys) == 31
