"""Every read from the shared root is bounded (issue 19, item 2): a FIFO, a device, a link or a file
without end planted by a group member costs a warning, never a wait or gigabytes. Each test drives the
real CLI in a subprocess (a hang is a timeout; peak memory is the subprocess's own ``ru_maxrss``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, SWEEPS

from prove_jobs.metadata import RunMeta, write_meta

TS = "20260101_000000"
STRANGER = 54321  # the uid the planted files are given (as root): someone else's, as in a shared root
HANG_S = 60  # a read that waits on a FIFO never returns: this long means it hung
QUICK_S = 20  # what "within a few seconds" may take on a loaded two-core test machine, start-up included
# The CLI's peak memory (ru_maxrss of its process tree) reading a 5 GB sparse scalars.json and a 1 GB line
# without a newline: Python and the CLI take ~60 MB, a log window 4 MB (twice while it is cut into lines).
PEAK_MB = 150
# Eight runs whose 1 MB config.py amplifies (a = [0]*500, x = [a + a, ...]): report --root stays under this.
CONFIG_PEAK_MB, CONFIG_S = 200, 8.0  # the CLI's start-up and report are ~1.5 s of it here

# Runs the CLI and reports its peak RSS (children's: the CLI, its prefetch workers) on stderr's last line.
_MEASURE = ("import resource, subprocess, sys\n"
            "rc = subprocess.call([sys.executable, '-m', 'prove_jobs.cli', *sys.argv[1:]])\n"
            "print(f'PEAK_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\n"
            "sys.exit(rc)\n")


class Done:
    def __init__(self, rc: int, out: str, err: str, seconds: float, peak_mb: float) -> None:
        self.rc, self.out, self.err, self.seconds, self.peak_mb = rc, out, err, seconds, peak_mb


def cli(*args: str, cwd: Path | None = None) -> Done:
    """``prove-jobs ARGS`` in a subprocess; a run past HANG_S fails the test (it waited on a FIFO)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    started = time.monotonic()
    # its own process group: a CLI stuck on a FIFO is killed with the wrapper, and its pipes close
    with subprocess.Popen([sys.executable, "-c", _MEASURE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, cwd=cwd, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"prove-jobs {' '.join(args)} hung for {HANG_S} s (a read waited on a FIFO)")
    seconds = time.monotonic() - started
    err, _, peak = err.rstrip().rpartition("PEAK_KB=")
    return Done(proc.returncode, out, err, seconds, int(peak or 0) / 1024)


def plant(path: Path) -> Path:
    """Make ``path`` (a FIFO, a link) someone else's, as a group member would leave it."""
    if os.geteuid() == 0:
        os.lchown(path, STRANGER, -1)
    return path


def train_line(it: int) -> str:
    return json.dumps({"lr": 0.01, "data_time": 0.01, "loss": 1.0, "time": 0.1, "iter": it, "memory": 100,
                       "step": it}) + "\n"


def val_line(it: int) -> str:
    return json.dumps({"aAcc": 90.0, "mIoU": 50.0 + it / 100, "mAcc": 60.0, "data_time": 0.01, "time": 0.2,
                       "step": it}) + "\n"


def text_line(it: int) -> str:
    return (f"2026/01/01 00:00:{it % 60:02d} - mmengine - INFO - Iter(train) [{it:>3}/400]  lr: 1.0000e-02  "
            f"eta: 0:00:10  time: 0.1000  data_time: 0.0100  memory: 100  loss: 1.0000\n")


def logged_run(root: Path, model: str, variant: str = "V1", *, json_log: bool = True) -> Path:
    """A hand-started run under ``root`` (4 levels: <VARIANT>/<method>/<dataset>/<model>) logged to iteration 300."""
    run_dir = root / variant / "m" / "d" / model
    start = run_dir / TS
    (start / "vis_data").mkdir(parents=True)
    (start / f"{TS}.log").write_text("".join(text_line(it) for it in (100, 200, 300)))
    if json_log:
        (start / "vis_data" / "scalars.json").write_text(
            "".join(train_line(it) + (val_line(it) if it == 200 else "") for it in (100, 200, 300)))
    return run_dir


def status_json(done: Done) -> dict[str, dict[str, object]]:
    return {row["model"]: row for row in json.loads(done.out)}


def said(done: Done) -> str:
    """Its warnings, one space between words (rich wraps them): stderr, and each row's notes in --json."""
    notes = [note for row in json.loads(done.out) for note in row["notes"]] if done.out.startswith("[") else []
    return " ".join(" ".join([done.err, *notes]).split())


# --- status --root: a FIFO, a device, a swapped file -----------------------------------------------------


def test_status_root_warns_about_a_fifo_or_a_link_in_place_of_a_log_and_shows_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good = logged_run(root, "good")
    json_fifo = logged_run(root, "json_fifo") / TS / "vis_data" / "scalars.json"
    json_fifo.unlink()
    os.mkfifo(json_fifo)
    plant(json_fifo)
    text_fifo = logged_run(root, "text_fifo", json_log=False) / TS / f"{TS}.log"
    text_fifo.unlink()
    os.mkfifo(text_fifo)
    plant(text_fifo)
    zero = logged_run(root, "zero") / TS / "vis_data" / "scalars.json"
    zero.unlink()
    zero.symlink_to("/dev/zero")
    plant(zero)

    done = cli("status", "--root", str(root), "--json")
    assert done.rc == 0, done.err
    assert done.seconds < QUICK_S
    rows = status_json(done)
    assert rows["good"]["iter"] == 300 and good.is_dir()
    assert f"{json_fifo}: cannot read (a FIFO, not a regular file)" in said(done)
    assert f"{text_fifo}: cannot read (a FIFO, not a regular file)" in said(done)
    assert f"{zero}: cannot read (a symbolic link to /dev/zero" in said(done)
    assert rows["json_fifo"]["iter"] == 300  # its text log still says where it is
    assert rows["zero"]["iter"] == 300


@contextlib.contextmanager
def flipping(paths: list[Path]) -> Iterator[None]:
    """Swap each of ``paths`` between a log file and a FIFO (renamed over it), again and again."""
    stop = threading.Event()
    bodies = {path: path.read_bytes() for path in paths}

    def flip() -> None:
        n = 0
        while not stop.is_set():
            for path in paths:
                tmp = path.with_name(f".flip{n}")
                if n % 2:
                    tmp.write_bytes(bodies[path])
                else:
                    os.mkfifo(tmp)
                os.replace(tmp, path)
            n += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_status_root_never_blocks_on_a_log_swapped_for_a_fifo_after_its_stat(tmp_path: Path) -> None:
    root = tmp_path / "root"
    runs = [logged_run(root, f"model{k:02d}", json_log=k % 2 == 0) for k in range(14)]
    logs = [r / TS / ("vis_data/scalars.json" if k % 2 == 0 else f"{TS}.log") for k, r in enumerate(runs)]
    steady = logged_run(root, "steady")
    with flipping(logs):
        for _ in range(3):  # a fresh cache each time: every log is stat-ed, then opened
            done = cli("status", "--root", str(root), "--json")
            assert done.rc == 0, done.err
            assert done.seconds < QUICK_S
            assert status_json(done)["steady"]["iter"] == 300 and steady.is_dir()
            cache = Path(os.environ["XDG_CACHE_HOME"]) / "prove-jobs" / "logs.marshal"
            cache.unlink(missing_ok=True)


def test_a_log_replaced_between_its_listing_and_its_read_is_a_warning(tmp_path: Path) -> None:
    from prove_jobs.logs.filestate import read_file

    run_dir = logged_run(tmp_path / "root", "m")
    log = run_dir / TS / "vis_data" / "scalars.json"
    listed = os.lstat(log)
    log.rename(log.with_name("listed.json"))  # kept: its inode is not reused
    os.mkfifo(log)  # after the stat, before the open: read without waiting, and said
    warnings: list[str] = []
    assert read_file(log, "json", None, warnings, st=listed) is None
    assert warnings == [f"{log}: cannot read (a FIFO, not a regular file)"]
    other = log.with_name("other.json")
    other.write_text(train_line(100))
    other.replace(log)  # another file: not the one listed
    warnings.clear()
    assert read_file(log, "json", None, warnings, st=listed) is None
    assert warnings == [f"{log}: cannot read (replaced since it was listed; read again next time)"]


# --- status RUN_DIR: the job's stderr ---------------------------------------------------------------------


def test_status_of_a_failed_run_says_its_job_err_is_a_fifo_and_does_not_wait(tmp_path: Path) -> None:
    run_dir = logged_run(tmp_path / "root", "failed")
    write_meta(run_dir, RunMeta(model="failed", variant="V1", executor="local", user="alice", host="elsewhere",
                                job_id="7", submitted_at=1.0, started_at=2.0, failed_at=3.0,
                                error="RuntimeError: boom"))
    err = run_dir / "prove" / "job.err"
    err.parent.mkdir()
    os.mkfifo(err)
    plant(err)
    done = cli("status", str(run_dir))
    assert done.rc == 0, done.err
    assert done.seconds < QUICK_S
    assert "error: RuntimeError: boom" in done.out
    assert f"{err}: cannot read (a FIFO, not a regular file)" in " ".join(done.out.split())
    err.unlink()
    err.symlink_to("/dev/zero")  # prove-jobs makes job.err a link: followed, but only to a regular file
    done = cli("status", str(run_dir))
    assert done.rc == 0 and "(a character device, not a regular file)" in " ".join(done.out.split())


# --- submit --skip-done and resume: last_checkpoint ---------------------------------------------------------


def test_submit_skip_done_skips_a_run_whose_last_checkpoint_is_a_fifo(demo: Path) -> None:
    finished = demo / "runs" / "DEMO_REF" / "baseline" / "cityscapes" / "demo_fcn_r18_tiny"
    finished.mkdir(parents=True)
    (finished / "iter_40.pth").write_bytes(b"")
    pointer = finished / "last_checkpoint"
    os.mkfifo(pointer)
    plant(pointer)
    done = cli("submit", str(SWEEPS / "demo.toml"), "--variant", "DEMO_REF", "--executor", "local", "--skip-done",
               "--dry-run")
    assert done.rc == 0, done.err
    assert done.seconds < QUICK_S
    said = " ".join(done.err.split())
    assert f"skipped DEMO_REF/demo_fcn_r18_tiny: {pointer}: cannot read (a FIFO, not a regular file)" in said
    assert "demo_segformer" in done.out + done.err  # the sweep's other runs of the variant: still submitted


def test_resume_point_refuses_a_fifo_pointer_without_waiting(tmp_path: Path) -> None:
    from prove_jobs.errors import RunError
    from prove_jobs.resume import resume_point

    os.mkfifo(tmp_path / "last_checkpoint")
    started = time.monotonic()
    with pytest.raises(RunError, match=r"last_checkpoint: cannot read \(a FIFO, not a regular file\)"):
        resume_point(tmp_path)
    assert time.monotonic() - started < 1


# --- report: model.py ---------------------------------------------------------------------------------------


def test_report_root_warns_about_a_fifo_model_py_and_never_follows_a_link_to_dev_zero(tmp_path: Path) -> None:
    root = tmp_path / "root"
    fifo = logged_run(root, "fifo") / "prove" / "model.py"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    plant(fifo)
    zero = logged_run(root, "zero") / "prove" / "model.py"
    zero.parent.mkdir()
    zero.symlink_to("/dev/zero")
    plant(zero)
    good = logged_run(root, "good") / "prove" / "model.py"
    good.parent.mkdir()
    good.write_text("prove_family = 'transformer'\n")
    done = cli("report", "--root", str(root), "--format", "json")
    assert done.rc == 0, done.err
    assert done.seconds < QUICK_S
    assert done.peak_mb < PEAK_MB  # /dev/zero read whole was 6 GB
    said = " ".join(done.err.split())
    assert f"{fifo}: cannot read (a FIFO, not a regular file)" in said
    assert f"{zero}: cannot read (a symbolic link to /dev/zero" in said
    report = json.loads(done.out)
    assert {r["model"] for r in report["runs"]} >= {"fifo", "zero", "good"}


# --- a log without end: bounded memory ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_5gb_sparse_scalars_json_and_a_1gb_line_cost_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    sparse = logged_run(root, "sparse") / TS / "vis_data" / "scalars.json"
    with sparse.open("r+b") as handle:  # the real records, then 5 GB of NUL bytes (a hole): one line without end
        handle.truncate(5 << 30)
    long_line = logged_run(root, "long_line", json_log=False) / TS / f"{TS}.log"
    with long_line.open("ab") as handle:  # written, not a hole: 1 GB of one line, no newline
        block = b"x" * (16 << 20)
        for _ in range(64):
            handle.write(block)
        handle.write(b"\n" + text_line(400).encode())
    tail = logged_run(root, "tail_line", json_log=False) / TS / f"{TS}.log"
    with tail.open("ab") as handle:  # the same at the end of a log: a line being written, for ever
        for _ in range(64):
            handle.write(block)
    good = logged_run(root, "good")
    try:
        done = cli("status", "--root", str(root), "--json")
        assert done.rc == 0, done.err
        assert done.peak_mb < PEAK_MB, f"status --root peaked at {done.peak_mb:.0f} MB"
        rows = status_json(done)
        assert rows["good"]["iter"] == 300 and good.is_dir()
        assert rows["sparse"]["iter"] == 300  # the records before the hole are read
        assert rows["long_line"]["iter"] == 400  # and the line after the long one
        assert f"{long_line}: skipped a line of 1,073,741,824 bytes at byte" in said(done)
        report = cli("report", "--root", str(root), "--format", "json")  # the training times read the same files
        assert report.rc == 0, report.err
        assert report.peak_mb < PEAK_MB, f"report --root peaked at {report.peak_mb:.0f} MB"
        print(f"status --root: {done.seconds:.1f} s, {done.peak_mb:.0f} MB; "
              f"report --root: {report.seconds:.1f} s, {report.peak_mb:.0f} MB")
    finally:
        for path in (sparse, long_line, tail):
            path.unlink()


# --- the config evaluator builds a bounded amount ------------------------------------------------------------


def amplifying_config(size: int) -> str:
    head = "a = [" + ", ".join(["0"] * 500) + "]\n"
    body = ", ".join(["a + a"] * ((size - len(head)) // 7))
    return head + f"x = [{body}]\n"


@pytest.mark.parametrize("size", [(1 << 20) - 100, 60 << 10])  # the 1 MB; one under the token budget, parsed
def test_eight_amplifying_configs_stay_small_and_fast(tmp_path: Path, size: int) -> None:
    root = tmp_path / "root"
    text = amplifying_config(size)
    for k in range(8):
        config = logged_run(root, f"model{k}") / "prove" / "config.py"
        config.parent.mkdir()
        config.write_text(text + "train_cfg = dict(max_iters=400)\n")
    done = cli("report", "--root", str(root), "--format", "json")
    assert done.rc == 0, done.err
    print(f"report --root of 8 runs with a {len(text):,}-byte amplifying config: {done.seconds:.1f} s, "
          f"{done.peak_mb:.0f} MB")
    assert done.seconds < CONFIG_S and done.peak_mb < CONFIG_PEAK_MB


def test_the_element_budget_leaves_what_follows_unknown() -> None:
    from prove_jobs.report.config_ast import MAX_ELEMENTS, UNKNOWN, module_values

    values = module_values(amplifying_config(60 << 10).encode() + b"lr = 0.01\nb = [1, 2]\n")
    assert values is not None and values["lr"] == 0.01  # a scalar costs nothing
    assert values["x"] is UNKNOWN and values["b"] is UNKNOWN  # the budget is spent: nothing more is built
    small = module_values(b"a = [0] \nx = [a + a, a + a]\ncrop = (512, 512)\n")
    assert small == {"a": [0], "x": [[0, 0], [0, 0]], "crop": (512, 512)} and MAX_ELEMENTS >= 100_000
