from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SWEEPS

from prove_jobs.cli import EXAMPLES, HANDLERS, build_parser, main


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prove_jobs.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


def test_every_command_is_documented_with_an_example() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    names = set(subparsers.choices)  # type: ignore[union-attr]
    assert names == set(HANDLERS) == set(EXAMPLES)
    for name in names:
        help_text = subparsers.choices[name].format_help()  # type: ignore[union-attr]
        assert "example:" in help_text and f"prove-jobs {name}" in help_text, name
    readme = (REPO / "README.md").read_text()
    for name in names:
        assert f"prove-jobs {name}" in readme, f"README does not mention `prove-jobs {name}`"


def test_plan_json_reproduces_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(SWEEPS / "cityscapes.toml"), "--data-root", str(tmp_path), "--json",
                 "--model", "segformer_mit-b3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_variant = {r["variant"]: r for r in rows}
    assert {v: (r["total_samples"], r["base_lr"], r["batch_size"], r["max_iters"]) for v, r in by_variant.items()} == {
        "CITYSCAPES_REPLICATION": (160000, 0.01, 2, 80000),
        "WEIGHTS_CITYSCAPES": (320000, 0.08, 16, 20000),
        "WEIGHTS_CITYSCAPES_BS8": (320000, 0.04, 8, 40000),
    }
    keys = {"model", "variant", "run_dir", "max_iters", "batch_size", "total_samples", "base_lr", "warmup_iters",
            "val_interval", "crop_size"}
    assert keys <= set(rows[0])
    assert by_variant["WEIGHTS_CITYSCAPES_BS8"]["run_dir"] == str(
        tmp_path / "WEIGHTS_CITYSCAPES_BS8/baseline/cityscapes/segformer_mit-b3"
    )
    assert by_variant["WEIGHTS_CITYSCAPES_BS8"]["warmup_iters"] == 1000
    assert by_variant["WEIGHTS_CITYSCAPES"]["crop_size"] == [512, 512]


def test_plan_table_shows_the_numbers(tmp_path: Path) -> None:
    done = run_cli("plan", str(SWEEPS / "cityscapes.toml"), "--data-root", str(tmp_path), "--model", "pspnet_r50")
    assert done.returncode == 0, done.stderr
    expected = ("160,000", "320,000", "0.08 (8× scaled)", "0.04 (4× scaled)", "0.01", "512×512", "SGD", "Poly", "8,000")
    for text in expected:
        assert text in done.stdout


def test_time_limits_read_as_hours_and_minutes() -> None:
    """Issue 20: the plan's "0:30", "24:00", "48:00" read as minutes:seconds."""
    from prove_jobs.plan import time_limit

    assert [time_limit(m) for m in (30, 1440, 2880, 90, 5)] == ["30 min", "24 h", "48 h", "1 h 30 min", "5 min"]


def test_plan_says_where_weights_start_how_runs_are_evaluated_and_normalised(tmp_path: Path) -> None:
    """Pretrained by default (the checkpoint mmseg's config names), from scratch only when said, one evaluation
    protocol, SyncBN across GPUs: in the table and in --json."""
    env = {**os.environ, "COLUMNS": "200"}
    done = run_cli("plan", str(SWEEPS / "cityscapes.toml"), "--data-root", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    for text in ("mit_b3_20220624-13b1141c.pth", "resnet50_v1c-2cccc1ad.pth", "hrnetv2_w48-d2186c55.pth",
                 "pretrained (see Models)", "whole image"):
        assert text in done.stdout, text
    assert "from scratch" not in done.stdout
    rows = json.loads(run_cli("plan", str(SWEEPS / "cityscapes.toml"), "--data-root", str(tmp_path), "--json").stdout)
    assert {(r["from_scratch"], r["norm"], r["evaluation"]["mode"]) for r in rows} == {(False, "BN", "whole")}
    segformer = next(r for r in rows if r["model"] == "segformer_mit-b3")
    assert segformer["pretrained"].endswith("/mit_b3_20220624-13b1141c.pth")
    demo = json.loads(run_cli("plan", str(SWEEPS / "demo.toml"), "--data-root", str(tmp_path), "--json").stdout)
    assert {(r["from_scratch"], r["pretrained"]) for r in demo} == {(True, None)}
    table = run_cli("plan", str(SWEEPS / "demo.toml"), "--data-root", str(tmp_path), env=env).stdout
    assert "from scratch" in table
    zoo = json.loads(run_cli("plan", str(SWEEPS / "cityscapes-zoo.toml"), "--data-root", str(tmp_path), "--json",
                             "--variant", "MMSEG_ZOO", "--model", "segformer_mit-b3").stdout)
    assert [(r["optimizer"], r["max_iters"], r["batch_size"], r["crop_size"], r["norm"]) for r in zoo] == [
        ("AdamW", 160000, 8, [1024, 1024], "SyncBN (4 GPUs)")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "missing.toml"], "missing.toml: sweep file not found"),
        (["plan", str(SWEEPS / "demo.toml"), "--model", "unet"],
         "--model: 'unet' is not a model of sweep demo (demo.toml has: "),
        (["submit", str(SWEEPS / "demo.toml"), "--data-root", "/nonexistent/root", "--executor", "local"],
         "/nonexistent/root: data root does not exist"),
        (["status"], "give a sweep file, a run dir, or --root DIR"),
        # a typo in a run dir: was "sweep file not found"
        (["status", "demo/runs/DEMO_REF/baseline/cityscapes/demo_fcn"], "demo_fcn: no such run dir or sweep file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_core_modules_do_not_import_the_training_stack() -> None:
    code = (
        "import sys\n"
        "import prove_jobs.cli, prove_jobs.spec, prove_jobs.runs, prove_jobs.render, prove_jobs.submit,"
        " prove_jobs.status, prove_jobs.dashboard, prove_jobs.scheduler, prove_jobs.logs, prove_jobs.payload,"
        " prove_jobs.claims, prove_jobs.control, prove_jobs.executors, prove_jobs.resubmit, prove_jobs.report\n"
        "heavy = sorted(m for m in ('torch', 'mmengine', 'mmseg', 'mmcv', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
