from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prove_jobs.metadata import RunMeta
from prove_jobs.runs import Run
from prove_jobs.states import RunState

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "job_templates"
SWEEPS = TEMPLATES / "sweeps"


@pytest.fixture
def weird_tmp_path(tmp_path: Path) -> Path:
    """A folder whose name has spaces, quotes and shell syntax (after submitit's conftest)."""
    path = tmp_path / "a dir with 'quotes'; echo pwned"
    path.mkdir()
    return path


@pytest.fixture
def fake_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The one fake SLURM (tests/fake_scheduler.py) first on PATH, where ``prove_jobs.scheduler.call`` finds it;
    returns its folder (its ``calls`` log, its ``states``)."""
    from fake_scheduler import install, path_with

    folder = install(tmp_path / "fake-slurm")
    monkeypatch.setenv("PATH", path_with(folder))
    return folder


@pytest.fixture
def templates_copy(tmp_path: Path) -> Path:
    """A writable copy of job_templates/ for tests that add or break templates."""
    dest = tmp_path / "templates"
    shutil.copytree(TEMPLATES, dest)
    return dest


# --- the reference report's runs (../shared/reference/cityscapes-training-comparison.md) ----------

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
    """A data root holding the reference report's runs (cityscapes.toml), logs written by mmengine itself."""
    pytest.importorskip("mmengine", reason="the train extra (mmengine) writes the logs")
    from prove_jobs.claims import LockHolder
    from prove_jobs.conflicts import record_conflict
    from prove_jobs.identity import current_host, current_user
    from prove_jobs.metadata import RunMeta, write_meta
    from prove_jobs.spec import load_sweep

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



@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DEMO_ROOT with the demo dataset and an empty runs/ folder, as `make demo` leaves it before training."""
    from prove_jobs.demo_data import make_demo_dataset

    make_demo_dataset(tmp_path / "data" / "cityscapes")
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("DEMO_ROOT", str(tmp_path))
    return tmp_path


def demo_run_dir(tmp_path: Path, model: str, variant: str = "DEMO_REF") -> Path:
    """A run of the demo sweep under ``tmp_path/runs``, rendered by prove-jobs (no claim, no job), with its data."""
    from dataclasses import replace

    from prove_jobs.demo_data import make_demo_dataset
    from prove_jobs.render import render_run, write_rendered
    from prove_jobs.spec import load_sweep

    data = make_demo_dataset(tmp_path / "data" / "cityscapes")
    sweep = replace(load_sweep(SWEEPS / "demo.toml", data_root=tmp_path / "runs"), dataset_root=data)
    run = sweep.runs([model], [variant])[0]
    write_rendered(render_run(sweep, run))
    return run.run_dir


STALL_HOOK = """
# added by tests/conftest.py stall_templates(): hold the training at an iteration while a gate file exists
custom_imports = dict(imports=['stall_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='StallWhileGate', at={at}, gate={gate!r})]
"""


@dataclass(frozen=True)
class Gate:
    """A gate file a training waits at (tests/stall_hook.py): open it to let the training go on."""

    path: Path

    def close(self) -> None:
        self.path.write_text("closed")

    def open(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def reached(self) -> bool:
        return Path(f"{self.path}.reached").exists()


def stall_templates(templates: Path, at: int, monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Make every model of a templates copy hold its training after iteration ``at`` while the gate is closed.

    The job finds tests/stall_hook.py through PYTHONPATH (inherited by local and SLURM jobs alike).
    """
    gate = Gate(templates / "stall.gate")
    for model in (templates / "models").glob("*.py"):
        model.write_text(model.read_text() + STALL_HOOK.format(at=at, gate=str(gate.path)))
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    gate.close()
    return gate


def demo_sweep_with(folder: Path, templates: Path, name: str = "demo.toml", **replace: str) -> Path:
    """The demo sweep written into ``folder``, using the ``templates`` copy (``replace``: text to swap)."""
    text = (SWEEPS / "demo.toml").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    text = text.replace('name = "demo"', f'name = "demo"\ntemplates = {str(templates)!r}')
    path = folder / name
    path.write_text(text)
    return path


def group_threads_alive(pgid: int) -> bool:
    """Does any thread of any process in process group ``pgid`` still run (zombies do not count)?

    A process's files (its flock with them) close when its last thread has exited: a killed
    training whose leader already reads as a zombie may still hold its lock while torch's threads exit.
    """
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            threads = [(task / "stat").read_text() for task in (proc / "task").iterdir()]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if any(thread.rsplit(")", 1)[1].split()[0] != "Z" for thread in threads):
            return True
    return False


def bench_module(name: str = "bench_status") -> Any:
    """benchmarks/bench_status.py: it writes runs in mmengine 0.10.7's on-disk format (``write_run``);
    ``bench_times``: it keeps the report's training_seconds as it was (json.loads of every line)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log_reads(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(bytes read, how) of every file read so far, from the DEBUG lines of `prove-jobs -vv`."""
    import re

    found = (re.match(r"read .*: bytes \d+-\d+ \((\d+)\), (.*)$", r.getMessage()) for r in caplog.records
             if r.name == "prove_jobs.logs")
    return [(int(m[1]), m[2]) for m in found if m]


def read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def checkpointed(run_dir: Path) -> int:
    """The iteration of the checkpoint mmengine's ``last_checkpoint`` names (0 if none yet).

    mmengine writes that pointer only after the checkpoint itself: a run killed or preempted
    after this says N resumes from N.
    """
    name = Path(read_or_empty(run_dir / "last_checkpoint").strip()).stem
    return int(name[5:]) if name.startswith("iter_") and name[5:].isdigit() else 0


def write_sweep(folder: Path, body: str, name: str = "sweep.toml") -> Path:
    path = folder / name
    path.write_text(body)
    return path


@pytest.fixture(autouse=True)
def umask_kept() -> Iterator[None]:
    """A test that runs a TrainingJob in this process (it sets the sweep's umask, as a job does) leaves the
    umask as it found it: a later test's job pickle would otherwise be group-writable, and refused by the job."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


@pytest.fixture(autouse=True)
def private_log_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`status` keeps a log cache under $XDG_CACHE_HOME: each test gets its own, none touches ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1], mode=0o664)
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def process_holding_lock(run_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process (another interpreter) holding the run's training lock."""
    from prove_jobs.runs import TRAIN_LOCK

    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir / TRAIN_LOCK)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def make_run(root: Path) -> Run:
    """An empty run dir of the demo sweep's layout under ``root``."""
    run = Run(model="demo_fcn_r18_tiny", variant="DEMO_REF", method="baseline", dataset="cityscapes", data_root=root)
    run.run_dir.mkdir(parents=True)
    return run


def claim(run: Run, **changes: object) -> RunMeta:
    """An open local claim by alice (submission token ``t-alice``) on ``run``, with ``changes``."""
    from prove_jobs.identity import current_host
    from prove_jobs.metadata import write_meta

    base = RunMeta(model=run.model, variant=run.variant, executor="local", host=current_host(), user="alice",
                   job_id="1", pid=os.getpid(), submitted_at=time.time(), max_iters=40, token="t-alice")
    return write_meta(run.run_dir, RunMeta(**{**base.to_json(), **changes}))


# --- driving the commands as a user does ----------------------------------------------------------------

@dataclass(frozen=True)
class Said:
    """What one ``prove-jobs`` command did: its exit status, its stdout and its stderr."""

    code: int
    out: str
    err: str

    def lines(self, start: str) -> list[str]:
        """The rest of each stderr line that begins with ``start`` (``"warning: "``, ``"skipped "``)."""
        return err_lines(self.err, start)


def said(*argv: str | Path) -> Said:
    """``prove-jobs ARGV`` through ``prove_jobs.cli.main``, for a test that reads what the command said on stderr
    (what it queued, skipped or warned of) or expects it to fail."""
    from prove_jobs.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return Said(code, out.getvalue(), err.getvalue())


def err_lines(err: str, start: str) -> list[str]:
    """The rest of each line of a command's stderr that begins with ``start``: what it said of each run."""
    return [line[len(start):] for line in err.splitlines() if line.startswith(start)]


def cli(*argv: str | Path) -> str:
    """``prove-jobs ARGV`` through ``prove_jobs.cli.main``: its stdout; a non-zero exit fails the test."""
    done = said(*argv)
    assert done.code == 0, f"prove-jobs {' '.join(map(str, argv))} exited {done.code}: {done.err}"
    return done.out


def cli_status(target: Any, *argv: str) -> list[dict[str, Any]]:
    """``prove-jobs status TARGET ARGV --json``: one row per run. ``target``: a sweep (or its file), or
    ``--root`` with a folder as the first of ``argv``."""
    where = [str(getattr(target, "path", target))] if target is not None else []
    rows: list[dict[str, Any]] = json.loads(cli("status", *where, *argv, "--json"))
    return rows


def cli_states(target: Any, *argv: str) -> list[RunState]:
    """The state of each run ``prove-jobs status`` shows, in its order."""
    return [state_of(row) for row in cli_status(target, *argv)]


def state_of(row: dict[str, Any]) -> RunState:
    """The state a ``status --json`` row names (its key: the state's name in lower case, ``not_submitted``)."""
    return RunState[row["state"].upper()]


# --- the project's SLURM test cluster (tests/cluster/slurm-up.sh) ---------------------------------------

SLURM_RESOURCES = """
[resources]
partition = "gpu"
gpus_per_node = 1
cpus_per_task = 1
mem_gb = 2
timeout_min = 10
"""
# A checkpoint every 20 iterations; the training holds after the first one until the test opens the gate.
LONG_VARIANT = """
description = "a checkpoint and a validation every 20 iterations"
max_iters = {max_iters}
batch_size = 2
lr = 0.01
warmup_iters = 5
val_interval = 20
checkpoint_interval = 20
crop_size = [64, 64]
"""


def slurm_demo_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resources: str = SLURM_RESOURCES) -> Any:
    """The demo sweep (2 models x 2 variants) on the test cluster, its templates a copy in ``tmp_path``."""
    from prove_jobs.demo_data import make_demo_dataset
    from prove_jobs.spec import load_sweep

    shutil.copytree(TEMPLATES, tmp_path / "templates")
    make_demo_dataset(tmp_path / "data" / "cityscapes")
    (tmp_path / "runs").mkdir()
    text = (SWEEPS / "demo.toml").read_text()
    text = text[: text.index("[resources]")] + resources
    text = text.replace('name = "demo"', 'name = "demo"\ntemplates = "templates"')
    path = tmp_path / "slurm.toml"
    path.write_text(text.replace("${DEMO_ROOT:-demo}", str(tmp_path)))
    monkeypatch.chdir(tmp_path)  # sbatch writes nothing here, but a job's cwd must be writable
    return load_sweep(path)


def long_sweep(tmp_path: Path, max_requeues: int, monkeypatch: pytest.MonkeyPatch,
               resources: str = SLURM_RESOURCES) -> Any:
    """DEMO_LONG (120 iterations) of demo_fcn_r18_tiny and demo_segformer_tiny on the test cluster, held after
    iteration 20 while its gate (``Gate(sweep.templates_dir / "stall.gate")``) is closed."""
    from prove_jobs.spec import load_sweep

    sweep = slurm_demo_sweep(tmp_path, monkeypatch, resources + f"max_requeues = {max_requeues}\n")
    stall_templates(sweep.templates_dir, 20, monkeypatch)  # closed: held after iteration 20
    (sweep.templates_dir / "variants" / "DEMO_LONG.toml").write_text(LONG_VARIANT.format(max_iters=120))
    text = sweep.path.read_text().replace('variants = ["DEMO_REF", "DEMO_BS4"]', 'variants = ["DEMO_LONG"]')
    path = tmp_path / "long.toml"
    path.write_text(text)
    return load_sweep(path)


def preempt() -> str:
    """A job of the higher-tier partition that needs the whole node: SLURM requeues ours to run it."""
    out = subprocess.run(["sbatch", "--parsable", "--partition=urgent", "--cpus-per-task=2", "--mem=100M",
                          "--job-name=urgent", "--output=/dev/null", "--wrap=sleep 2"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True,
                         check=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def wait_until(what: str, condition: Any, timeout_s: float = 240) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        time.sleep(0.5)
