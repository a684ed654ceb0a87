"""The generated report gives the hand-written report's numbers.

The data root carries the reference report's figures (cityscapes-training-comparison.md) in
mmengine's real log format, written by mmengine's own LocalVisBackend (what LoggerHook
uses), plus prove-jobs metadata for who ran what.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BS8, BS16, OTHER, REF, SWEEPS, cli

from prove_jobs.cli import main
from prove_jobs.identity import current_user
from prove_jobs.report import training_seconds


def test_report_reproduces_the_hand_written_numbers(reference_root: Path) -> None:
    sweep: list[str | Path] = [SWEEPS / "cityscapes.toml", "--data-root", reference_root, "--reference", REF]
    report = json.loads(cli("report", *sweep, "--format", "json"))
    # a model without a variant to compare with the reference has no difference (null)
    differences = {row["model"]: row["difference_vs_reference"] for row in report["results"]
                   if row["difference_vs_reference"] is not None}
    assert differences == {"pspnet_r50": -0.78, "segformer_mit-b3": -3.14, "segnext_mscan-b": -0.59}
    averages = report["family_averages"]
    assert averages["cnn"] == -0.78 and averages["transformer"] == round((-3.14 - 0.59) / 2, 2)

    times = {(t["model"], t["variant"]): t for t in report["times"]}
    segformer = times[("segformer_mit-b3", BS16)]
    assert round(segformer["seconds"]) == 8099 and round(segformer["seconds"] / 3600, 2) == 2.25
    assert round(segformer["minutes_per_point"], 1) == 1.8
    assert segformer["speedup_vs_reference"] is not None and round(segformer["speedup_vs_reference"]) == 3
    assert round(times[("segnext_mscan-b", REF)]["minutes_per_point"], 1) == 6.9

    md = cli("report", *sweep)
    assert "| pspnet_r50 | 57.64% | 56.86% | - | **-0.78 pts** |" in md
    assert "| segformer_mit-b3 | 79.98% | 75.97% | **76.84%** | **-3.14 pts** |" in md
    assert "| segnext_mscan-b | 81.13% | 79.97% | **80.54%** | **-0.59 pts** |" in md
    assert "| mask2former_swin-b | - | (running @ 2500) | - | - |" in md
    assert "| **Base LR** | 0.01 | 0.08 (8× scaled) | 0.04 (4× scaled) |" in md
    assert "| **Total samples** | 160,000 | 320,000 | 320,000 |" in md
    assert f"- ✅ pspnet_r50: Completed ({OTHER}) - 56.86% mIoU (Job 1057001)" in md
    assert f"- 🔄 mask2former_swin-b: Running ({current_user()}) @ 2500/20000" in md
    assert f"- ⏳ deeplabv3plus_r50: Lock conflict ({OTHER})" in md
    assert f"- ⏳ hrnet_hr48: Lock conflict ({OTHER})" in md
    assert "| **20000** | **75.97%** | **95.58%** |" in md and "| 14000 | 73.13% | 95.40% |" in md
    row = "| **segformer_mit-b3** | WEIGHTS_CITYSCAPES | 8,099 sec (2.25 hrs) | 75.97% | 1.8 min | ~3.3× shorter |"
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
    assert main(["report", str(SWEEPS / "cityscapes.toml"), "--data-root", str(reference_root),
                 "--reference", "NOPE"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cityscapes.toml: --reference" in err
    assert "--reference: variant 'NOPE' is not in this sweep" in err


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
    # the JSON report links each plot it wrote: one per variant (its name), one per model ("model:<name>")
    report = json.loads(cli("report", SWEEPS / "cityscapes.toml", "--data-root", reference_root, "--format", "json",
                            "--plots", tmp_path / "p"))
    assert {key for key in report["plots"] if not key.startswith("model:")} == {REF, BS16, BS8}


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


def test_report_of_a_root_groups_by_path_and_picks_the_longest_schedule(
        reference_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The runs found under a folder, compared as the sweep's report compares them (no sweep file needed)."""
    assert main(["report", "--root", str(reference_root), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"] == REF  # 80k iterations: the most (no recorded batch: iterations decide)
    by_model = {row["model"]: row for row in report["results"]}
    assert by_model["segformer_mit-b3"]["final_miou"] == {REF: 79.98, BS16: 75.97, BS8: 76.84}
    assert by_model["segformer_mit-b3"]["difference_vs_reference"] == -3.14
    assert by_model["segformer_mit-b3"]["verdict"] == "single run"
    assert len(report["runs"]) == len(list(reference_root.glob("*/*/*/*/prove_run.json")))


def test_run_time_vs_reference_says_longer_when_it_is() -> None:
    """Issue 20: 2.8 s against a 2.3 s reference read "~0.8× shorter", and 5.8 s against 5.9 s "~1.0× shorter"."""
    from prove_jobs.report.markdown import relative_time

    assert relative_time(2.3 / 2.8) == "~1.2× longer"
    assert relative_time(5.9 / 5.8) == "about the same"
    assert relative_time(27050 / 8099) == "~3.3× shorter"
    assert relative_time(None) == "-"
