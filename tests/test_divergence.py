"""A diverged run stops: K non-finite losses in a row end the training, recorded, shown, not resubmitted blindly."""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
from conftest import demo_sweep_with

from prove_jobs.cli import main
from prove_jobs.divergence import NON_FINITE_STREAK, Streak, TrainingDiverged, is_diverged
from prove_jobs.metadata import read_meta
from prove_jobs.scheduler import slurm_available

K = NON_FINITE_STREAK


def test_a_streak_of_non_finite_losses_stops_and_a_finite_one_starts_over() -> None:
    streak = Streak()
    for it, loss in enumerate([1.0, math.nan, math.inf, 0.5, math.nan], start=1):
        streak.see(it, loss)  # never K in a row: no stop
    streak.see(6, math.nan)
    with pytest.raises(TrainingDiverged) as caught:
        streak.see(7, -math.inf)
    message = str(caught.value)
    assert message.startswith("diverged at iteration 5 (loss nan)")
    assert f"stopped at iteration 7 after {K} non-finite losses in a row" in message
    assert (caught.value.first, caught.value.stopped) == (5, 7)
    assert is_diverged(message) and not is_diverged("RuntimeError: boom") and not is_diverged(None)


def test_the_rule_needs_no_torch_nor_mmengine() -> None:
    import subprocess
    import sys

    code = ("import sys, prove_jobs.divergence, prove_jobs.resubmit, prove_jobs.dashboard; "
            "print(sorted(m for m in ('torch', 'mmengine', 'mmseg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


needs_training = pytest.mark.skipif(
    importlib.util.find_spec("mmseg") is None, reason="the train extra (mmsegmentation) is not installed"
)

DIVERGE = """description = "Demo: an absurd LR, to see a diverged run stop"
max_iters = 40
batch_size = 2
lr = 1e6
warmup_iters = 0
val_interval = 20
checkpoint_interval = 20
crop_size = [64, 64]
"""


def _losses(run_dir: Path) -> list[dict[str, float]]:
    """Every training record of every start, in order (mmengine writes NaN and Infinity as such)."""
    records = []
    for scalars in sorted(run_dir.glob("*/vis_data/scalars.json")):
        records += [r for line in scalars.read_text().splitlines() if "loss" in (r := json.loads(line))]
    return records


def _status_json(sweep: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["status", str(sweep), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert isinstance(row, dict)
    return row


@pytest.mark.slow
@needs_training
def test_an_absurd_lr_diverges_stops_and_is_not_resubmitted_blindly(
        demo: Path, templates_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (templates_copy / "variants" / "DEMO_DIVERGE.toml").write_text(DIVERGE)
    sweep = demo_sweep_with(demo, templates_copy, **{
        'variants = ["DEMO_REF", "DEMO_BS4"]': 'variants = ["DEMO_DIVERGE"]',
        'models = ["demo_segformer_tiny", "demo_fcn_r18_tiny"]': 'models = ["demo_fcn_r18_tiny"]',
        "log_interval = 5": "log_interval = 1",
    })
    started = time.monotonic()
    assert main(["submit", str(sweep), "--executor", "local", "--wait"]) == 1
    wall = time.monotonic() - started
    out = capsys.readouterr()
    row = _status_json(sweep, capsys)
    run_dir = Path(str(row["run_dir"]))
    records = _losses(run_dir)
    meta = read_meta(run_dir)
    assert meta is not None and meta.failed_at is not None
    recorded, logged = meta.failed_at, max(p.stat().st_mtime for p in run_dir.glob("*/vis_data/scalars.json"))
    first = next(r["step"] for r in records if not math.isfinite(r["loss"]))
    last = records[-1]["step"]
    error = str(row["error"])
    assert row["state"] == "failed", error
    assert error.startswith(f"diverged at iteration {int(first)} (loss "), error
    assert first < last <= first + K + 2 and last < 40, (first, last)
    assert f"stopped at iteration {int(last)}" in error
    assert "diverged at iteration" in out.err + out.out  # --wait's end lines say why

    # the table says it in the State column; one run's status gives the whole error
    capsys.readouterr()
    assert main(["status", str(sweep)]) == 0
    assert "diverged" in capsys.readouterr().out
    assert main(["status", str(run_dir)]) == 0
    assert f"error: diverged at iteration {int(first)}" in capsys.readouterr().out
    # the report's status list names it
    assert main(["report", str(sweep)]) == 0
    assert f"diverged at iteration {int(first)}" in capsys.readouterr().out

    # resubmit --failed skips it, with why and how to force it; nothing is submitted
    job = row["job_id"]
    assert main(["resubmit", str(sweep), "--failed", "--executor", "local"]) == 0
    said = capsys.readouterr()
    text = said.out + said.err
    assert "skipped DEMO_DIVERGE/demo_fcn_r18_tiny: diverged at iteration" in text and "--force-diverged" in text
    assert _status_json(sweep, capsys)["job_id"] == job

    # forced: submitted again (it resumes from its checkpoint, or the start, and diverges again)
    assert main(["resubmit", str(sweep), "--failed", "--force-diverged", "--executor", "local"]) == 0
    said = capsys.readouterr()
    assert "resubmitted DEMO_DIVERGE/demo_fcn_r18_tiny" in said.out + said.err
    assert main(["wait", str(sweep), "--timeout", "600", "--poll", "0.5"]) == 1
    again = _status_json(sweep, capsys)
    assert again["job_id"] != job and again["state"] == "failed" and is_diverged(str(again["error"]))

    losses = {int(r["step"]): r["loss"] for r in records}
    seconds = sum(r["time"] for r in records if first < r["step"] <= last)  # the iterations after the first NaN
    print(f"\ndiverged: first non-finite loss at iteration {int(first)} ({losses[int(first)]}), stopped at "
          f"{int(last)}: {int(last - first)} iterations, ~{seconds:.2f} s at the logged s/it, the record "
          f"{(recorded - logged) * 1000:.0f} ms after the last log line; submit to end {wall:.1f} s")


@pytest.mark.slurm
@pytest.mark.slow
@needs_training
@pytest.mark.skipif(not slurm_available(), reason="no SLURM controller answers (`make slurm-up` starts one)")
@pytest.mark.parametrize("gpus", [1, 2])
def test_an_absurd_lr_stops_on_the_cluster_with_one_and_two_ranks(
        demo: Path, templates_copy: Path, capsys: pytest.CaptureFixture[str], gpus: int) -> None:
    (templates_copy / "variants" / "DEMO_DIVERGE.toml").write_text(DIVERGE)
    resources = (f'[resources]\npartition = "gpu"\ngpus_per_node = {gpus}\ncpus_per_task = 1\nmem_gb = {2 * gpus}\n'
                 "timeout_min = 10\n")
    sweep = demo_sweep_with(demo, templates_copy, **{
        'variants = ["DEMO_REF", "DEMO_BS4"]': 'variants = ["DEMO_DIVERGE"]',
        'models = ["demo_segformer_tiny", "demo_fcn_r18_tiny"]': 'models = ["demo_fcn_r18_tiny"]',
        "log_interval = 5": "log_interval = 1",
        "[resources]\ngpus_per_node = 0\ncpus_per_task = 1\ntimeout_min = 30\n": resources,
    })
    assert main(["submit", str(sweep), "--executor", "slurm"]) == 0
    assert main(["wait", str(sweep), "--timeout", "600", "--poll", "1"]) == 1
    row = _status_json(sweep, capsys)
    run_dir = Path(str(row["run_dir"]))
    records = _losses(run_dir)
    first = next(r["step"] for r in records if not math.isfinite(r["loss"]))
    last = records[-1]["step"]
    assert row["state"] == "failed" and str(row["error"]).startswith(f"diverged at iteration {int(first)} (loss ")
    assert first < last <= first + K + 2 and last < 40, (first, last)
    meta = read_meta(run_dir)
    assert meta is not None and meta.starts == 1 and meta.restarts == 0  # ended, not requeued
    print(f"\n{gpus} rank(s) on SLURM: first non-finite loss at {int(first)}, stopped at {int(last)}")
