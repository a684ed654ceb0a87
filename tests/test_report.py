"""The generated report gives the hand-written report's numbers.

The data root carries the reference report's figures (cityscapes-training-comparison.md) in
mmengine's real log format, written by mmengine's own LocalVisBackend (what LoggerHook
uses), plus prove-jobs metadata for who ran what.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import SWEEPS

from prove_jobs.cli import main
from prove_jobs.errors import SpecError
from prove_jobs.locks import LockHolder, record_conflict
from prove_jobs.report import build_report, render_markdown, training_seconds, write_plots
from prove_jobs.runs import RunMeta, current_host, current_user, write_meta
from prove_jobs.spec import load_sweep
from prove_jobs.status import collect_status

pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")

REF, BS16, BS8 = "CITYSCAPES_REPLICATION", "WEIGHTS_CITYSCAPES", "WEIGHTS_CITYSCAPES_BS8"
OTHER = "chge7185"
# (iteration, mIoU, aAcc) from the report's Training Progress tables
SEGFORMER_BS16 = [(2000, 57.78, 92.98), (4000, 56.41, 92.72), (6000, 63.15, 93.98), (8000, 69.83, 94.57),
                  (10000, 68.98, 94.67), (12000, 68.04, 94.10), (14000, 73.13, 95.40), (16000, 74.60, 95.49),
                  (18000, 74.67, 95.61), (20000, 75.97, 95.58)]
SEGNEXT_BS16 = [(2000, 59.16, 93.29), (4000, 64.75, 94.06), (6000, 70.93, 95.25), (8000, 74.59, 95.46),
                (10000, 73.54, 95.37), (12000, 76.80, 95.92), (14000, 76.58, 95.94), (16000, 78.90, 96.18),
                (18000, 79.40, 96.26), (20000, 79.97, 96.33)]
SEGFORMER_BS8 = [(4000, 58.69, 93.43), (8000, 62.77, 93.95), (12000, 66.63, 94.29), (16000, 69.27, 94.42),
                 (20000, 70.95, 94.77), (24000, 71.55, 94.92), (28000, 66.61, 93.60), (32000, 73.77, 95.27),
                 (36000, 75.87, 95.41), (40000, 76.84, 95.68)]
SEGNEXT_BS8 = [(4000, 62.63, 94.16), (8000, 65.53, 94.39), (12000, 67.83, 94.87), (16000, 75.30, 95.78),
               (20000, 75.45, 95.67), (24000, 74.62, 95.99), (28000, 77.59, 95.81), (32000, 79.03, 96.21),
               (36000, 79.33, 96.32), (40000, 80.54, 96.40)]
# (variant, model): (curve, run time in seconds, user, job id)
COMPLETED = {
    (REF, "pspnet_r50"): ([(80000, 57.64, 94.0)], None, OTHER, "1050001"),
    (REF, "deeplabv3plus_r50"): ([(80000, 58.02, 94.1)], None, OTHER, "1050002"),
    (REF, "hrnet_hr48"): ([(80000, 65.67, 95.0)], None, OTHER, "1050003"),
    (REF, "segformer_mit-b3"): ([(80000, 79.98, 96.2)], 27050, OTHER, "1050004"),
    (REF, "segnext_mscan-b"): ([(80000, 81.13, 96.5)], 33627, OTHER, "1050005"),
    (BS16, "pspnet_r50"): ([(20000, 56.86, 93.9)], None, OTHER, "1057001"),
    (BS16, "segformer_mit-b3"): (SEGFORMER_BS16, 8099, "me", "1057002"),
    (BS16, "segnext_mscan-b"): (SEGNEXT_BS16, 8794, "me", "1057003"),
    (BS8, "segformer_mit-b3"): (SEGFORMER_BS8, 8958, "me", "1057498"),
    (BS8, "segnext_mscan-b"): (SEGNEXT_BS8, 9584, "me", "1057499"),
}
LOG_INTERVAL = 500


def write_logs(run_dir: Path, max_iters: int, last_iter: int, curve: list[tuple[int, float, float]],
               seconds: float) -> None:
    """What LoggerHook writes for one start: train records every LOG_INTERVAL iterations, val records."""
    from mmengine.visualization import LocalVisBackend

    backend = LocalVisBackend(save_dir=str(run_dir / "20260101_000000" / "vis_data"))
    vals = {it: (miou, aacc) for it, miou, aacc in curve}
    for it in range(LOG_INTERVAL, last_iter + 1, LOG_INTERVAL):
        backend.add_scalars({"lr": 0.01, "data_time": 0.01, "loss": 1.0, "time": seconds / max_iters, "iter": it},
                            step=it)
        if it in vals:
            miou, aacc = vals[it]
            backend.add_scalars({"aAcc": aacc, "mIoU": miou, "mAcc": miou + 8, "data_time": 0.01, "time": 0.2},
                                step=it)
    backend.close()


@pytest.fixture
def reference_root(tmp_path: Path) -> Path:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=tmp_path)
    me = current_user()
    for run in sweep.runs():
        variant = sweep.variant(run.variant)
        key = (run.variant, run.model)
        base = RunMeta(model=run.model, variant=run.variant, executor="slurm", host=current_host(),
                       submitted_at=1.0e9, started_at=1.0e9 + 60, max_iters=variant.max_iters)
        if key in COMPLETED:
            curve, seconds, user, job = COMPLETED[key]
            run.run_dir.mkdir(parents=True)
            write_logs(run.run_dir, variant.max_iters, variant.max_iters, curve,
                       seconds or variant.max_iters * 0.3)
            write_meta(run.run_dir, RunMeta(**{**base.to_json(), "user": me if user == "me" else user,
                                               "job_id": job, "finished_at": 1.0e9 + 9000}))
        elif key == (BS16, "mask2former_swin-b"):
            run.run_dir.mkdir(parents=True)
            write_logs(run.run_dir, variant.max_iters, 2500, [], 0.5 * variant.max_iters)
            # live: a local job whose process (this one) is alive
            write_meta(run.run_dir, RunMeta(**{**base.to_json(), "user": me, "executor": "local",
                                               "job_id": str(os.getpid()), "pid": os.getpid()}))
        elif key in {(BS16, "deeplabv3plus_r50"), (BS16, "hrnet_hr48")}:
            run.run_dir.mkdir(parents=True)
            held = write_meta(run.run_dir, RunMeta(**{**base.to_json(), "user": OTHER, "executor": "local",
                                                      "job_id": str(os.getpid()), "pid": os.getpid(),
                                                      "started_at": None}))
            holder = LockHolder(user=OTHER, host=held.host, executor="local", job_id=held.job_id, pid=held.pid,
                                since=held.submitted_at, sweep=str(sweep.path))
            record_conflict(run.run_dir, holder, str(sweep.path))
    return tmp_path


def test_report_reproduces_the_hand_written_numbers(reference_root: Path, tmp_path: Path) -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=reference_root)
    statuses = collect_status(sweep.runs()).statuses
    report = build_report(sweep, statuses, reference=REF)
    assert report.differences == {"pspnet_r50": -0.78, "segformer_mit-b3": -3.14, "segnext_mscan-b": -0.59}
    averages = report.family_averages()
    assert averages["cnn"] == -0.78 and averages["transformer"] == round((-3.14 - 0.59) / 2, 2)

    times = {(t.model, t.variant): t for t in report.times}
    segformer = times[("segformer_mit-b3", BS16)]
    assert round(segformer.seconds) == 8099 and round(segformer.seconds / 3600, 2) == 2.25
    assert round(segformer.minutes_per_point, 1) == 1.8
    assert segformer.speedup_vs_reference is not None and round(segformer.speedup_vs_reference) == 3
    assert round(times[("segnext_mscan-b", REF)].minutes_per_point, 1) == 6.9

    md = render_markdown(report)
    assert "| pspnet_r50 | 57.64% | 56.86% | - | **-0.78%** |" in md
    assert "| segformer_mit-b3 | 79.98% | 75.97% | **76.84%** | **-3.14%** |" in md
    assert "| segnext_mscan-b | 81.13% | 79.97% | **80.54%** | **-0.59%** |" in md
    assert "| mask2former_swin-b | - | (running @ 2500) | - | - |" in md
    assert "| **Base LR** | 0.01 | 0.08 (8× scaled) | 0.04 (4× scaled) |" in md
    assert "| **Total samples** | 160,000 | 320,000 | 320,000 |" in md
    assert f"- ✅ pspnet_r50: Completed ({OTHER}) - 56.86% mIoU (Job 1057001)" in md
    assert f"- 🔄 mask2former_swin-b: Running ({current_user()}) @ 2500/20000" in md
    assert f"- ⏳ deeplabv3plus_r50: Lock conflict ({OTHER})" in md
    assert f"- ⏳ hrnet_hr48: Lock conflict ({OTHER})" in md
    assert "| **20000** | **75.97%** | **95.58%** |" in md and "| 14000 | 73.13% | 95.40% |" in md
    row = "| **segformer_mit-b3** | WEIGHTS_CITYSCAPES | 8,099 sec (2.25 hrs) | 75.97% | 1.8 min | ~3.3× faster |"
    assert row in md
    assert "0.00%" not in md  # no val yet is never shown as a zero


def test_report_json_numbers_equal_status_json(reference_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = str(SWEEPS / "cityscapes.toml")
    assert main(["report", sweep, "--data-root", str(reference_root), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["status", sweep, "--data-root", str(reference_root), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    def steady(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]  # a running clock

    assert steady(report["runs"]) == steady(status)
    by_model = {row["model"]: row for row in report["results"]}
    assert by_model["segformer_mit-b3"]["final_miou"] == {REF: 79.98, BS16: 75.97, BS8: 76.84}
    assert by_model["segformer_mit-b3"]["difference_vs_reference"] == -3.14
    assert by_model["mask2former_swin-b"]["final_miou"][BS16] is None
    row = next(r for r in status if r["model"] == "mask2former_swin-b" and r["variant"] == BS16)
    assert row["iter"] == 2500 and row["last_miou"] is None


def test_missing_reference_is_one_line(reference_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=reference_root)
    with pytest.raises(SpecError, match="--reference: variant 'NOPE' is not in this sweep"):
        build_report(sweep, [], reference="NOPE")
    assert main(["report", str(SWEEPS / "cityscapes.toml"), "--data-root", str(reference_root),
                 "--reference", "NOPE"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cityscapes.toml: --reference" in err


def test_plots_are_written_and_linked(reference_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the report extra (matplotlib) draws the plots")
    out = tmp_path / "out" / "report.md"
    assert main(["report", str(SWEEPS / "cityscapes.toml"), "--data-root", str(reference_root), "--out", str(out),
                 "--plots", str(tmp_path / "out" / "plots")]) == 0
    text = out.read_text()
    for variant in (REF, BS16, BS8):
        png = tmp_path / "out" / "plots" / f"{variant}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{variant}.png)" in text
    sweep = load_sweep(SWEEPS / "cityscapes.toml", data_root=reference_root)
    assert set(write_plots(build_report(sweep, collect_status(sweep.runs()).statuses), tmp_path / "p")) == {
        REF, BS16, BS8}


def test_training_seconds_counts_resumed_iterations_once(tmp_path: Path) -> None:
    from mmengine.visualization import LocalVisBackend

    for stamp, iters, per_iter in (("20260101_000000", range(50, 301, 50), 1.0),
                                   ("20260101_010000", range(250, 401, 50), 2.0)):
        backend = LocalVisBackend(save_dir=str(tmp_path / stamp / "vis_data"))
        for it in iters:
            backend.add_scalars({"loss": 1.0, "time": per_iter, "iter": it}, step=it)
        backend.close()
    # 1..200 from the first start (1 s each), 201..400 from the resumed one (2 s each)
    assert training_seconds(tmp_path) == 200 * 1.0 + 200 * 2.0
    assert training_seconds(tmp_path / "nothing") is None
