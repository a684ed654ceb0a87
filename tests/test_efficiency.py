"""Efficiency, visible (issue 23): each job samples what it uses into its run folder (a process beside the
training), `status` shows a live run's utilisation and flags one idle, the report has a Resources section.

The GPU path is exercised with a fake ``nvidia-smi`` on PATH printing what the real one prints for
``--query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits``; no real GPU here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, demo_sweep_with, stall_templates, wait_until

from prove_jobs import efficiency, sampler
from prove_jobs.cli import main
from prove_jobs.efficiency import idle_of, live_usage, read_segments, with_usage
from prove_jobs.report.resources import RunResources
from prove_jobs.runs import Run
from prove_jobs.sampler import GpuQuery, parse_gpu_csv, visible_gpus
from prove_jobs.scheduler import parse_usage
from prove_jobs.states import RunState
from prove_jobs.status import RunStatus
from prove_jobs.usage import usage_of

needs_training = pytest.mark.skipif(
    importlib.util.find_spec("mmseg") is None, reason="the train extra (mmsegmentation) is not installed"
)

# what nvidia-smi 550 prints for two H100s, one busy, with that query
SMI_CSV = "97, 20481, 81559\n3, 1021, 81559\n"
FAKE_SMI = f"""#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
printf '{SMI_CSV}'
"""


def _fake_smi(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder / "calls"


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "V" / "baseline" / "cityscapes" / "m"
    (run_dir / "prove").mkdir(parents=True)
    return run_dir


def _write(run_dir: Path, lines: list[dict[str, object] | str]) -> Path:
    path = run_dir / "prove" / sampler.SAMPLES_FILE
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


# --- the GPU path, through a fake nvidia-smi --------------------------------------------------------------


def test_nvidia_smis_csv_is_read_per_gpu_and_unknowns_are_none() -> None:
    assert parse_gpu_csv(SMI_CSV) == [[97.0, 20481.0, 81559.0], [3.0, 1021.0, 81559.0]]
    assert parse_gpu_csv("[N/A], 512, [Not Supported]\ngarbage\n") == [[None, 512.0, None]]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == "0,1"
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) is None and visible_gpus({}) is None


def test_a_job_with_gpus_samples_them_through_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_smi(tmp_path / "bin", monkeypatch)
    assert GpuQuery("0,1")() == [[97.0, 20481.0, 81559.0], [3.0, 1021.0, 81559.0]]
    assert "--query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits --id=0,1" in (
        calls.read_text())
    assert GpuQuery(None)() is None  # a CPU-only job never asks

    # the sampler process itself, around a busy loop, with CUDA_VISIBLE_DEVICES as SLURM sets it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    run_dir = _sampled(tmp_path, monkeypatch, seconds=1.6)
    usage = usage_of(run_dir)
    assert usage is not None and usage.source == "GPU" and usage.samples >= 2
    assert usage.mean_util == pytest.approx(50.0) and usage.peak_gpu_mb == 20481 and usage.gpu_total_mb == 81559
    assert usage.peak_rss_mb and usage.peak_rss_mb > 1  # the host's memory too


def _sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float, cores: int = 1) -> Path:
    """A process that keeps a core busy for ``seconds`` inside ``sampling()`` (every 0.4 s)."""
    run_dir = tmp_path / "runs" / "V" / "baseline" / "cityscapes" / "m"
    (run_dir / "prove").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv(sampler.EVERY_ENV, "0.4")
    code = ("import os, time, sys; from pathlib import Path; from prove_jobs.sampler import sampling\n"
            "os.umask(0o002)\n"  # as the payload sets it (the sweep's [sharing] umask)
            f"with sampling(Path(sys.argv[1]), cores={cores}):\n"
            f"    end = time.monotonic() + {seconds}\n"
            "    while time.monotonic() < end: pass\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(run_dir)], check=True, env=env, timeout=60)
    return run_dir


# --- the CPU path: the sampler process ----------------------------------------------------------------------


def test_a_cpu_job_samples_its_own_cpu_use_and_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run_dir = _sampled(tmp_path, monkeypatch, seconds=1.6)
    lines = [json.loads(line) for line in (run_dir / "prove" / sampler.SAMPLES_FILE).read_text().splitlines()]
    assert lines[0]["start"] and lines[0]["cores"] == 1 and lines[0]["every"] == 0.4
    samples = lines[1:]
    assert len(samples) >= 3 and all("gpu" not in s for s in samples)
    assert all(s["cpu"] > 60 for s in samples), samples  # a busy loop on its one core (the sampler not counted)
    assert os.stat(run_dir / "prove" / sampler.SAMPLES_FILE).st_mode & 0o020  # group-writable, as the payload's

    # the sampler's own sums (usage.json: what the report reads) say what the samples say
    summed = usage_of(run_dir)
    segments = read_segments(run_dir)
    utils = [u for seg in segments for x in seg.samples if (u := x.util) is not None]
    assert summed is not None and summed.samples == len(samples) and summed.spans_s == (segments[0].span_s,)
    assert summed.mean_util == pytest.approx(sum(utils) / len(utils), abs=0.1)
    assert summed.peak_rss_mb == max(x["rss_mb"] for x in samples)
    assert os.stat(run_dir / "prove" / sampler.USAGE_FILE).st_mode & 0o020

    _sampled(tmp_path, monkeypatch, seconds=0.9)  # a second start: kept beside the first
    again = usage_of(run_dir)
    assert again is not None and len(again.spans_s) == 2 and again.samples > summed.samples
    assert [s.start for s in read_segments(run_dir)] == [json.loads(line)["start"] for line in (
        run_dir / "prove" / sampler.SAMPLES_FILE).read_text().splitlines() if '"start"' in line]

    # a summary someone broke is a warning, and the samples are read instead
    (run_dir / "prove" / sampler.USAGE_FILE).write_text('{"v": 1, "starts": [{"start": 5, "last": 1}]}')
    warnings: list[str] = []
    fallback = usage_of(run_dir, warnings)
    assert fallback is not None and fallback.samples == again.samples and len(fallback.spans_s) == 2
    assert warnings == [f"{run_dir / 'prove' / sampler.USAGE_FILE}: 1 start(s) not a summary; the samples read "
                        "instead"]


def test_the_sampler_ends_with_the_training_and_survives_slurms_usr2(tmp_path: Path) -> None:
    """SIGKILL of the training (no `finally`): the sampler notices at once (prctl) and ends; USR2, which SLURM sends
    every process of the step before the time limit, does not end it."""
    run_dir = _run_dir(tmp_path)
    code = ("import time, sys; from pathlib import Path; from prove_jobs.sampler import sampling\n"
            "with sampling(Path(sys.argv[1])):\n    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), sampler.EVERY_ENV: "0.3"}
    training = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], env=env)
    try:
        children = wait_until("the sampler", lambda: _children(training.pid), 30)
        [child] = children
        wait_until("a sample", lambda: (run_dir / "prove" / sampler.SAMPLES_FILE).read_text().count("\n") >= 2, 30)
        os.kill(child, signal.SIGUSR2)
        time.sleep(0.5)
        assert _alive(child)
    finally:
        training.kill()
        training.wait()
    wait_until("the sampler's end", lambda: not _alive(child), 5)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for tid in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_full_file_moves_aside_and_both_are_read_as_one_start(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path)
    monkeypatch.setattr(sampler, "MAX_BYTES", 600)
    out = sampler.Appender(str(run_dir), {"start": 1000.0, "host": "n1", "pid": 1, "every": 10, "cores": 2})
    for i in range(40):
        out.write({"t": 1000.0 + 10 * (i + 1), "cpu": 50.0, "rss_mb": 100.0 + i})
    files = sorted(p.name for p in (run_dir / "prove").iterdir())
    assert files == [sampler.OLD_SAMPLES_FILE, sampler.SAMPLES_FILE]
    assert all(p.stat().st_size <= 600 for p in (run_dir / "prove").iterdir())
    [segment] = read_segments(run_dir)  # the newest lines of the two files, one start
    assert segment.start == 1000.0 and segment.host == "n1" and segment.samples[-1].t == 1400.0
    usage = usage_of(run_dir)
    assert usage is not None and usage.peak_rss_mb == 139.0 and usage.spans_s == (400.0,)


# --- reading: bounded, safe, garbage skipped --------------------------------------------------------------


def test_garbage_lines_are_skipped_with_one_warning_naming_the_file(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    path = _write(run_dir, [{"start": 100.0, "host": "n1", "pid": 1, "every": 10, "cores": 4},
                            {"t": 110.0, "cpu": 50.0, "rss_mb": 2048.0},
                            "not json", '{"t": "soon"}', "[1, 2]", "[" * 5000 + "]" * 5000,
                            {"t": 120.0, "cpu": 1e300, "rss_mb": -1, "gpu": [[99, 10, 20], [1, 30, 20]]},
                            {"t": 130.0, "cpu": 30.0, "rss_mb": 1024.0}])
    with path.open("a") as file:
        file.write('{"t": 140.0, "cpu"')  # being written: not garbage
    warnings: list[str] = []
    usage = usage_of(run_dir, warnings)
    assert warnings == [f"{path}: 4 lines that are not a sample skipped"], warnings
    assert usage is not None and usage.samples == 3 and usage.peak_rss_mb == 2048.0 and usage.peak_gpu_mb == 30


def test_a_planted_link_or_fifo_is_a_warning_never_followed_nor_waited_on(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"t": 1.0, "cpu": 1.0}) + "\n")
    (run_dir / "prove" / sampler.SAMPLES_FILE).symlink_to(secret)
    os.mkfifo(run_dir / "prove" / sampler.OLD_SAMPLES_FILE)
    warnings: list[str] = []
    assert usage_of(run_dir, warnings) is None
    assert len(warnings) == 2 and "symbolic link" in warnings[1] and "FIFO" in warnings[0], warnings


# --- status: now, and idle ----------------------------------------------------------------------------------


def _samples(start: float, utils: list[float], every: float = 60.0, gpu: bool = True) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = [{"start": start, "host": "gpu07", "pid": 1, "every": every, "cores": 4}]
    for i, util in enumerate(utils):
        sample: dict[str, object] = {"t": start + every * (i + 1), "cpu": 20.0, "rss_mb": 3000.0}
        if gpu:
            sample["gpu"] = [[util, 9000, 40960], [util, 9100, 40960]]
        else:
            sample["cpu"] = util
        lines.append(sample)
    return lines


@pytest.mark.parametrize(("quiet_minutes", "idle"), [(31, True), (29, False)])
def test_a_run_under_5_percent_for_30_minutes_is_idle_by_its_samples_clock(
        tmp_path: Path, quiet_minutes: int, idle: bool) -> None:
    """The samples' own timestamps decide (one clock, the node's); the login node's clock only says whether the
    file is still written."""
    run_dir = _run_dir(tmp_path)
    path = _write(run_dir, _samples(1000.0, [90.0] * 20 + [1.0] * (quiet_minutes + 1)))
    now = path.stat().st_mtime + 10
    live = live_usage(run_dir, now)
    assert live is not None and live.source == "GPU" and live.util == 1.0 and live.gpu_mb == 9100
    assert live.idle_s == quiet_minutes * 60 and live.idle is idle
    assert live.cell() == (f"idle {quiet_minutes}m" if idle else "1% GPU")
    assert live_usage(run_dir, now + efficiency.STALE_AFTER_S + 1) is None  # nobody writes it: says nothing of now

    run = Run.from_dir(run_dir)
    running = RunStatus(run=run, state=RunState.RUNNING, iter=10, max_iters=20, curve=(), meta=None, node="gpu07")
    shown = with_usage(running, now)
    assert shown.usage == live and shown.to_json()["usage"]["idle"] is idle
    assert any("idle: GPU use under 5% for the last 31 min on gpu07" in n for n in shown.notes) is idle
    ended = RunStatus(run=run, state=RunState.COMPLETED, iter=20, max_iters=20, curve=(), meta=None)
    assert with_usage(ended, now) is ended  # not read at all


def test_cpu_samples_idle_too() -> None:
    [segment] = _segments(_samples(0.0, [80.0, 2.0, 1.0, 0.5], gpu=False))
    live = idle_of(segment)
    assert live.source == "CPU" and live.util == 0.5 and live.idle_s == 120


def _segments(lines: list[dict[str, object]]) -> list[efficiency.Segment]:
    segments: list[efficiency.Segment] = []
    efficiency.parse_samples([json.dumps(line).encode() for line in lines], segments)
    return segments


def test_status_stays_cheap_a_run_never_sampled_costs_one_failed_stat(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    assert live_usage(run_dir, time.time()) is None


# --- sacct, and what to ask for next time ---------------------------------------------------------------------


SACCT = """\
41_0|612|60|billing=1,cpu=4,gres/gpu=2,mem=64G,node=1||
41_0.batch|612||cpu=4,gres/gpu=2,mem=64G,node=1|10240K|cpu=00:00:02,mem=10240K
41_0.0|610||cpu=4,gres/gpu=2,mem=64G,node=1|18.5G|cpu=01:10:00,gres/gpumem=21474836480,mem=18.5G
41_0|3540|60|billing=1,cpu=4,gres/gpu=2,mem=64G,node=1||
41_0.0|3538||cpu=4,gres/gpu=2,mem=64G,node=1|19G|cpu=03:10:00,mem=19G
42|0|60|billing=1,cpu=1,mem=2G,node=1||
"""


def test_sacct_gives_each_starts_time_the_limit_the_memory_given_and_maxrss() -> None:
    used = parse_usage(SACCT)
    job = used["41_0"]
    assert job.elapsed_s == (612.0, 3540.0) and job.timelimit_min == 60 and job.mem_mb == 64 * 1024
    assert job.max_rss_mb == 19 * 1024 and job.max_gpu_mb == 20 * 1024
    pending = used["42"]
    assert pending.elapsed_s == () and pending.max_rss_mb is None  # not started; jobacct_gather/none: no MaxRSS


def test_next_time_asks_for_the_peak_plus_a_quarter_and_the_time_plus_a_fifth() -> None:
    base = RunResources(label="m", variant="V", completed=True, source="GPU", mean_util=85.0)
    assert RunResources.advice(base) == []
    roomy = base.__class__(**{**base.__dict__, "peak_mem_gb": 18.6, "mem_gb": 64.0, "total_min": 70.0,
                              "longest_min": 70.0, "timeout_min": 24 * 60.0, "starts": 1})
    assert roomy.advice() == ["mem_gb = 24 rather than 64 (peak 18.6 GB)",
                              "timeout_min = 90 would do (70.0 min used of 1440)"]
    tight = base.__class__(**{**base.__dict__, "peak_mem_gb": 31.0, "mem_gb": 32.0, "total_min": 100.0,
                              "longest_min": 59.5, "timeout_min": 60.0, "starts": 2, "mean_util": 25.0})
    assert tight.advice() == ["mem_gb = 39: the peak was 97% of 32 GB",
                              "timeout_min = 120 would train it in one start (it took 2)",
                              "GPUs 25% busy on average: more cpus_per_task and data loader workers, or fewer GPUs"]
    unknown = RunResources(label="m", variant="V", completed=False)
    assert unknown.next_time() == "?"


# --- real runs, through the CLI -------------------------------------------------------------------------------


@pytest.mark.slow
@needs_training
def test_a_local_training_is_sampled_status_flags_it_idle_and_the_report_has_its_resources(
        demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from conftest import TEMPLATES

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    gate = stall_templates(templates, 10, monkeypatch)  # held (sleeping: idle) after iteration 10
    monkeypatch.setenv(sampler.EVERY_ENV, "0.5")
    monkeypatch.setattr(efficiency, "IDLE_AFTER_S", 2.0)  # the rule, at a test's scale
    sweep = demo_sweep_with(demo, templates, **{
        'variants = ["DEMO_REF", "DEMO_BS4"]': 'variants = ["DEMO_BS4"]',
        'models = ["demo_segformer_tiny", "demo_fcn_r18_tiny"]': 'models = ["demo_fcn_r18_tiny"]',
    })
    assert main(["submit", str(sweep), "--executor", "local"]) == 0
    wait_until("the training to hold", lambda: gate.reached, 300)
    run_dir = demo / "runs" / "DEMO_BS4" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"

    def idle_row() -> dict[str, object] | None:
        capsys.readouterr()
        assert main(["status", str(sweep), "--json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        return row if row["usage"] and row["usage"]["idle"] else None

    row = wait_until("status to call it idle", idle_row, 60)
    assert row["state"] == "running" and row["usage"]["source"] == "CPU" and row["usage"]["util_pct"] < 5
    assert main(["status", str(sweep)]) == 0
    shown = capsys.readouterr()
    assert "Util" in shown.out and "idle " in shown.out and "idle: CPU use under 5%" in shown.err

    gate.open()
    assert main(["wait", str(sweep), "--timeout", "600", "--poll", "0.5"]) == 0
    lines = (run_dir / "prove" / sampler.SAMPLES_FILE).read_text().splitlines()
    samples = [json.loads(line) for line in lines if '"t"' in line]
    assert len(samples) >= 3 and all("gpu" not in s and s["rss_mb"] > 100 for s in samples)
    assert max(s["cpu"] for s in samples) > 20  # it trained on its core
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    assert "Efficiency: CPU use" in capsys.readouterr().out

    assert main(["report", str(sweep)]) == 0
    text = capsys.readouterr().out
    section = text[text.index("## Resources"):]
    row_line = next(line for line in section.splitlines() if line.startswith("| demo_fcn_r18_tiny | DEMO_BS4"))
    # no mem_gb in the demo sweep (the cluster's default): `?`; timeout_min = 30 of which a minute or so was used
    assert "GB of ?" in row_line and "of 30 min" in row_line and "% CPU" in row_line, row_line
    assert "mem_gb = 1 would do" in row_line and "timeout_min = 10 would do" in row_line, row_line
    assert "time: samples" in row_line and "memory: samples" in row_line and "use: samples" in row_line
    assert "### Per variant" in section and "| DEMO_BS4 | 1 |" in section
    assert main(["report", str(sweep), "--format", "json"]) == 0
    resources = json.loads(capsys.readouterr().out)["resources"]
    [run] = resources["runs"]
    assert run["source"] == "CPU" and run["timeout_min"] == 30 and run["mem_gb"] is None and run["peak_mem_gb"] > 0.1


# --- the real cluster: sacct with accounting on, the samples with it off ----------------------------------------


def _slurm_answers() -> bool:
    from prove_jobs.scheduler import slurm_available

    return slurm_available()


def _accounting_on() -> bool:
    done = subprocess.run(["sacct", "--noheader", "-j", "1"], capture_output=True, text=True, check=False)
    return done.returncode == 0


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not _slurm_answers(), reason="no SLURM controller answers (`make slurm-up` starts one)")
def test_on_slurm_the_resources_come_from_sacct_with_accounting_and_from_the_samples_without(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from conftest import SLURM_RESOURCES, SWEEPS, TEMPLATES

    from prove_jobs.demo_data import make_demo_dataset

    shutil.copytree(TEMPLATES, tmp_path / "templates")
    make_demo_dataset(tmp_path / "data" / "cityscapes")
    (tmp_path / "runs").mkdir()
    text = (SWEEPS / "demo.toml").read_text()
    text = text[: text.index("[resources]")] + SLURM_RESOURCES  # mem_gb = 2, timeout_min = 10, one (fake) GPU
    text = text.replace('name = "demo"', 'name = "demo"\ntemplates = "templates"')
    sweep = tmp_path / "slurm.toml"
    sweep.write_text(text.replace("${DEMO_ROOT:-demo}", str(tmp_path)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(sampler.EVERY_ENV, "1")  # sbatch passes the environment on
    chosen = ["--model", "demo_fcn_r18_tiny", "--variant", "DEMO_BS4"]
    assert main(["submit", str(sweep), *chosen, "--executor", "slurm"]) == 0
    assert main(["wait", str(sweep), *chosen, "--timeout", "300", "--poll", "1"]) == 0
    run_dir = tmp_path / "runs" / "DEMO_BS4" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    assert '"t":' in (run_dir / "prove" / sampler.SAMPLES_FILE).read_text()  # sampled on the node

    capsys.readouterr()
    assert main(["report", str(sweep), "--format", "json"]) == 0
    [run] = json.loads(capsys.readouterr().out)["resources"]["runs"]
    # the test cluster's GPUs are fake (no nvidia-smi): the training's CPU use stands in
    assert run["source"] == "CPU" and run["mean_util"] is not None and run["peak_mem_gb"] > 0.1
    assert run["timeout_min"] == 10 and run["mem_gb"] == 2  # sacct's TimelimitRaw and AllocTRES, or the sweep's
    if _accounting_on():
        assert "time: sacct" in run["sources"], run
        # MaxRSS where the cluster gathers it; the test cluster's jobacct_gather/none leaves it empty
        assert "memory: sacct" in run["sources"] or "memory: samples" in run["sources"], run
    else:
        assert "time: samples" in run["sources"] and "memory: samples" in run["sources"], run
    assert run["longest_min"] < 10 and "timeout_min = 10" not in " ".join(run["advice"])  # 10 is the floor
    assert main(["report", str(sweep)]) == 0
    section = capsys.readouterr().out.split("## Resources")[1]
    assert "| demo_fcn_r18_tiny | DEMO_BS4 |" in section and "of 2 GB" in section and "of 10 min" in section
