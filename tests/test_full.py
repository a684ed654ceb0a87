"""The full mmcv flavour (compiled ops) with mmdet: Mask2Former builds, trains and resumes through the CLI,
and the payload there never loads the mmcv-lite shim, wherever the job was submitted from.

`make test-full` builds .venv-full and runs these (`pytest -m full`); with mmcv-lite they skip, saying why.
Each training goes through `prove-jobs submit --executor local` on the demo data, as a user would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SWEEPS, TEMPLATES, checkpointed, demo_run_dir, read_or_empty

from prove_jobs.cli import main


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package missing or failing to import
        return False


def _missing_full_stack() -> str | None:
    """What this environment lacks for the full flavour, or ``None``."""
    if not _found("mmseg"):
        return "the train extra (mmsegmentation) is not installed"
    missing = [what for what, module in (("mmdet", "mmdet"), ("compiled mmcv ops, mmcv._ext", "mmcv._ext"))
               if not _found(module)]
    return f"missing: {', '.join(missing)}" if missing else None


MISSING = _missing_full_stack()
REASON = f"needs the full mmcv flavour and mmdet 3.3.0 ({MISSING}); `make test-full` builds .venv-full and runs these"
if MISSING and os.environ.get("PROVE_JOBS_REQUIRE_FULL"):
    # `make test-full` sets this: there, a skip would hide a broken .venv-full.
    raise RuntimeError(f"PROVE_JOBS_REQUIRE_FULL is set but {MISSING} ({sys.executable})")

pytestmark = [pytest.mark.full, pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=REASON)]

MASK2FORMER = "mask2former_swin-b"
# 4 iterations at batch 2 on 128x128 crops, a validation and a checkpoint every 2: a real Mask2Former
# training (Swin-B, the shipped template) in well under a minute on 2 CPU cores.
TINY_VARIANT = """
description = "smoke test: 4 iterations at 128x128, a validation and a checkpoint every 2"
max_iters = 4
batch_size = 2
lr = 0.01
warmup_iters = 0
val_interval = 2
checkpoint_interval = 2
crop_size = [128, 128]
"""
RESOURCES = """
[training]
log_interval = 1
num_workers = 0
seed = 0

[resources]
gpus_per_node = 0
cpus_per_task = 2
timeout_min = 30
"""

# Imported by the runs' configs (custom_imports) inside the training process: it reports what that
# process loaded, and stalls it once right after a checkpoint so that a kill lands there every time.
PROBE = '''
import json, os, sys, time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ProveRecordModules(Hook):
    def __init__(self, out):
        self.out = out

    def before_train(self, runner):
        ops = sys.modules.get("mmcv.ops")
        record = dict(
            pid=os.getpid(), executable=sys.executable,
            shim="prove_jobs.mmcv_shim" in sys.modules,
            compiled_ops="mmcv._ext" in sys.modules,
            stand_in=bool(getattr(ops, "__prove_jobs_shim__", False)),
        )
        with open(self.out, "a") as f:
            f.write(json.dumps(record) + "\\n")


@HOOKS.register_module()
class ProveStallAfterCheckpoint(Hook):
    priority = "LOWEST"  # after CheckpointHook (VERY_LOW): the checkpoint and last_checkpoint are written

    def __init__(self, at, flag):
        self.at, self.flag = at, flag

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        # runner.iter counts finished iterations minus one here; a resumed start begins past `at`
        if runner.iter + 1 == self.at and not os.path.exists(self.flag):
            with open(self.flag, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)
'''


@pytest.fixture(autouse=True)
def _drop_checkpoints(tmp_path: Path) -> Iterator[None]:
    """A Mask2Former (Swin-B) checkpoint is 860 MB and pytest keeps the last three sessions' tmp_paths."""
    yield
    for checkpoint in tmp_path.rglob("*.pth"):
        checkpoint.unlink(missing_ok=True)


def make_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, *, stall_at: int | None = None) -> Path:
    """A sweep of ``model`` x the tiny variant on the demo data, its templates a copy with the probe hooks."""
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "variants" / "FULL_TINY.toml").write_text(TINY_VARIANT)
    hooks = [f"dict(type='ProveRecordModules', out={str(tmp_path / 'modules.jsonl')!r})"]
    if stall_at is not None:
        hooks.append(f"dict(type='ProveStallAfterCheckpoint', at={stall_at}, flag={str(tmp_path / 'stalled')!r})")
    model_file = templates / "models" / f"{model}.py"
    model_file.write_text(model_file.read_text() + (
        "\ncustom_imports = dict(imports=['prove_full_probe'], allow_failed_imports=False)\n"
        f"custom_hooks = [{', '.join(hooks)}]\n"
    ))
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "prove_full_probe.py").write_text(PROBE)
    # the local job inherits the environment: its config imports the probe from here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(probe), os.environ.get("PYTHONPATH")])))

    assert main(["demo-data", str(tmp_path / "data" / "cityscapes")]) == 0
    (tmp_path / "runs").mkdir()
    text = (SWEEPS / "demo.toml").read_text()
    text = text[: text.index("[training]")] + RESOURCES
    text = text.replace('crop_size = [64, 64]', 'crop_size = [128, 128]')
    text = text.replace('models = ["demo_segformer_tiny", "demo_fcn_r18_tiny"]', f'models = ["{model}"]')
    # from scratch: Mask2Former's template names the Swin-B checkpoint, which nothing here may download
    text = text.replace('variants = ["DEMO_REF", "DEMO_BS4"]',
                        'variants = ["FULL_TINY"]\ntemplates = "templates"\npretrained = false')
    sweep = tmp_path / "full.toml"
    sweep.write_text(text.replace("${DEMO_ROOT:-demo}", str(tmp_path)))
    return sweep


def status(sweep: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", str(sweep), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert isinstance(row, dict)
    return row


def job_output(run_dir: Path) -> str:
    """The end of the job's stdout and stderr (prove/job.out, prove/job.err), for failure messages."""
    return "\n".join(read_or_empty(run_dir / "prove" / name)[-4000:] for name in ("job.out", "job.err"))


def modules_seen(tmp_path: Path) -> list[dict[str, Any]]:
    lines = read_or_empty(tmp_path / "modules.jsonl").splitlines()
    return [json.loads(line) for line in lines]


def train_steps(scalars: Path) -> list[int]:
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def test_mask2former_trains_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tmp_path, monkeypatch, MASK2FORMER)
    started = time.monotonic()
    code = main(["submit", str(sweep), "--executor", "local", "--wait"])
    wall = time.monotonic() - started
    row = status(sweep, capsys)
    run_dir = Path(row["run_dir"])
    assert code == 0, f"{row['state']}: {row['error']}\n{job_output(run_dir)}"
    assert row["state"] == "completed" and row["iter"] == row["max_iters"] == 4
    assert [point[0] for point in row["curve"]] == [2, 4]
    assert all(0 <= miou <= 100 and 0 < aacc <= 100 for _, miou, aacc in row["curve"])
    assert (run_dir / "iter_4.pth").is_file()
    # the real compiled mmcv.ops (MultiScaleDeformableAttention in the pixel decoder), not the shim's stand-in
    [seen] = modules_seen(tmp_path)
    assert seen["compiled_ops"] and not seen["stand_in"], seen
    print(f"\nmask2former_swin-b: 4 iterations at 128x128 in {wall:.1f} s (submit to end), "
          f"curve {row['curve']}")


def test_mask2former_resumes_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tmp_path, monkeypatch, MASK2FORMER, stall_at=2)
    assert main(["submit", str(sweep), "--executor", "local"]) == 0
    row = status(sweep, capsys)
    run_dir = Path(row["run_dir"])
    deadline = time.monotonic() + 600
    # The job stalls right after its checkpoint at iteration 2 (the probe), before the validation.
    while not ((tmp_path / "stalled").is_file() and checkpointed(run_dir) == 2):
        assert time.monotonic() < deadline, f"no checkpoint at iteration 2 within 600 s\n{job_output(run_dir)}"
        assert status(sweep, capsys)["state"] in ("pending", "starting", "running"), job_output(run_dir)
        time.sleep(0.5)
    job_id = status(sweep, capsys)["job_id"]
    os.killpg(int(job_id), signal.SIGKILL)  # the local job id is the controller's pid; it leads its session
    assert main(["wait", str(sweep), "--timeout", "60", "--poll", "0.5"]) == 1
    killed = status(sweep, capsys)
    assert killed["state"] == "failed" and killed["iter"] == 2 and killed["curve"] == []
    assert not (run_dir / "iter_4.pth").exists()

    assert main(["resubmit", str(sweep), "--failed", "--executor", "local"]) == 0
    code = main(["wait", str(sweep), "--timeout", "600", "--poll", "0.5"])
    final = status(sweep, capsys)
    # Resuming loads the checkpoint with torch.load(weights_only=True): a global missing from the
    # payload's allow-list shows here as "Unsupported global: GLOBAL <module>.<name>".
    assert code == 0, f"{final['state']}: {final['error']}\n{job_output(run_dir)}"
    assert final["state"] == "completed" and final["iter"] == 4
    assert [point[0] for point in final["curve"]] == [4]
    first, second = sorted(run_dir.glob("*/vis_data/scalars.json"))
    assert train_steps(first) == [1, 2]
    assert train_steps(second)[0] > 2, "the second start did not resume from the checkpoint at 2"
    log = read_or_empty(second.parent.parent / f"{second.parent.parent.name}.log")
    assert "resumed epoch: 0, iter: 2" in log
    assert "weights_only" not in job_output(run_dir) and "Unsupported global" not in job_output(run_dir)
    assert len(modules_seen(tmp_path)) == 2


# --- the shim is chosen where the job runs -------------------------------------------------------------

TRAIN_AND_REPORT = """
import sys
from prove_jobs.payload import TrainingJob
print(TrainingJob(sys.argv[1], threads=2)())
ops = sys.modules.get("mmcv.ops")
print("shim loaded:", "prove_jobs.mmcv_shim" in sys.modules)
print("stand-in ops:", bool(getattr(ops, "__prove_jobs_shim__", False)))
print("compiled ops:", "mmcv._ext" in sys.modules)
"""


def test_the_payload_on_full_mmcv_never_loads_the_lite_shim(tmp_path: Path) -> None:
    from prove_jobs.metadata import RunMeta, write_meta

    run_dir = demo_run_dir(tmp_path, "demo_fcn_r18_tiny", "DEMO_BS4")
    write_meta(run_dir, RunMeta(model="demo_fcn_r18_tiny", variant="DEMO_BS4"))
    done = subprocess.run([sys.executable, "-c", TRAIN_AND_REPORT, str(run_dir)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "completed DEMO_BS4/demo_fcn_r18_tiny at iter 20" in done.stdout
    assert "compiled ops: True" in done.stdout and "stand-in ops: False" in done.stdout
    assert "shim loaded: False" in done.stdout, "the payload imported prove_jobs.mmcv_shim on full mmcv"


# A lite login node: mmcv without its compiled extension, the shim imported and its stand-in mmcv.ops
# registered, as `prove-jobs render` or a notebook there would have. It submits; the job runs in a fresh
# process of this (full) environment, as on a full-flavour compute node.
LITE_SUBMITTER = """
import sys

class NoCompiledOps:
    def find_spec(self, name, path=None, target=None):
        if name == "mmcv._ext":
            raise ModuleNotFoundError("No module named 'mmcv._ext'", name=name)
        return None

sys.meta_path.insert(0, NoCompiledOps())
from prove_jobs import mmcv_shim

mmcv_shim.install()
assert getattr(sys.modules["mmcv.ops"], "__prove_jobs_shim__", False), "no stand-in: not a lite process"
from prove_jobs.cli import main

sys.exit(main(["submit", sys.argv[1], "--executor", "local", "--wait"]))
"""


def test_a_job_submitted_from_a_lite_login_node_trains_on_full_mmcv_without_the_shim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tmp_path, monkeypatch, "demo_fcn_r18_tiny")
    done = subprocess.run([sys.executable, "-c", LITE_SUBMITTER, str(sweep)], capture_output=True, text=True,
                          timeout=600)
    row = status(sweep, capsys)
    assert done.returncode == 0, f"{done.stdout[-2000:]}{done.stderr[-2000:]}\n{job_output(Path(row['run_dir']))}"
    assert row["state"] == "completed" and [point[0] for point in row["curve"]] == [2, 4]
    [seen] = modules_seen(tmp_path)
    assert seen["compiled_ops"] and not seen["stand_in"], seen
    assert not seen["shim"], "the job imported prove_jobs.mmcv_shim on full mmcv"


def test_a_lite_login_node_submits_to_the_full_flavour_named_by_resources_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The real thing: the lite venv's prove-jobs submits; ``[resources] python`` names this full venv's Python."""
    lite = REPO / ".venv" / "bin" / "prove-jobs"
    if not lite.exists():
        pytest.skip(f"no lite install at {lite} (make install) to submit from")
    sweep = make_sweep(tmp_path, monkeypatch, "demo_fcn_r18_tiny")
    sweep.write_text(sweep.read_text() + f"python = {sys.executable!r}\n")
    done = subprocess.run([str(lite), "submit", str(sweep), "--executor", "local", "--wait"], capture_output=True,
                          text=True, timeout=600)
    row = status(sweep, capsys)
    assert done.returncode == 0, f"{done.stdout[-2000:]}{done.stderr[-2000:]}\n{job_output(Path(row['run_dir']))}"
    assert row["state"] == "completed"
    [seen] = modules_seen(tmp_path)
    assert seen["executable"] == sys.executable and seen["compiled_ops"] and not seen["shim"], seen
