"""Benchmark: reading the logs of a big sweep (``prove-jobs status`` on 1,000 runs).

Usage::

    .venv/bin/python benchmarks/bench_status.py [--runs 1000] [--data bench-data]

Builds (or reuses, when its parameters match) a synthetic data root
``<data>/<VARIANT>/baseline/cityscapes/<model>/`` of ``--runs`` runs. Each run is an
80,000-iteration mmseg 1.x job in mmengine 0.10.7's real on-disk format: three starts (two
resumes from a checkpoint), each ``<ts>/vis_data/scalars.json`` + ``<ts>/<ts>.log``, a train
record every 50 iterations, a val (+ checkpoint) every 2,000, the text log with its environment
and config header, val progress lines and the per-class table. One run in ten is still training.

Then, side by side in one process, it measures:

* cold: every run's RunLog with no cache, in one process - the "full re-parse";
* cold with ``LogCache.prefetch`` (what the first ``status`` does): the same on every core;
* the old line-by-line parser on a sample of runs, scaled to all runs (for reference);
* warm: a refresh with the in-memory cache, nothing changed; and a new process's refresh with
  the cache file loaded from disk;
* append: 1% of runs got 50 new train lines (JSON and text) appended, refreshed both ways;
* ``prove_jobs.status.collect_status`` end to end on the discovered runs (uncached, as it is now).

The appended bytes are cut off again at the end, so the data dir stays reusable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prove_jobs.logs import LogCache, RunLog, read_run_log, read_run_log_full  # noqa: E402

MAX_ITERS = 80_000
LOG_INTERVAL = 50
VAL_INTERVAL = 2_000
VAL_IMAGES = 500
# (first iteration logged, last iteration logged) per start; the 2nd and 3rd resume from the
# last checkpoint (a multiple of VAL_INTERVAL) before where the previous one died.
STARTS = ((LOG_INTERVAL, 30_650), (30_050, 56_900), (56_050, MAX_ITERS))
IN_PROGRESS_END = 77_500  # one run in ten is still training
PARAMS_FILE = "bench-params.json"
PARAMS = {
    "version": 3,
    "max_iters": MAX_ITERS,
    "log_interval": LOG_INTERVAL,
    "val_interval": VAL_INTERVAL,
    "starts": STARTS,
    "in_progress_end": IN_PROGRESS_END,
}
CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
VARIANTS = ("BASELINE", "AUG_STRONG", "LR_HALF", "LR_DOUBLE", "BS4")
MODELS = ("segformer_mit-b3", "deeplabv3plus_r50", "pspnet_r101", "mask2former_swin-t")
SEC_PER_ITER = 0.4567
T0 = time.mktime((2026, 1, 10, 8, 0, 0, 0, 0, -1))


def _stamp(t: float) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))


def log_header(ts: str, resume_from: int | None) -> str:
    env = (
        "\n------------------------------------------------------------\nSystem environment:\n"
        "    sys.platform: linux\n    Python: 3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]\n"
        "    CUDA available: True\n    MUSA available: False\n    numpy_random_seed: 1234\n"
        "    GPU 0,1,2,3: NVIDIA A100-SXM4-80GB\n    CUDA_HOME: /usr/local/cuda\n"
        "    NVCC: Cuda compilation tools, 12.1\n"
        "    GCC: gcc (GCC) 11.4.0\n    PyTorch: 2.1.2+cu121\n    TorchVision: 0.16.2+cu121\n    OpenCV: 4.9.0\n"
        "    MMEngine: 0.10.7\n\nRuntime environment:\n    cudnn_benchmark: True\n"
        "    mp_cfg: {'mp_start_method': 'fork', 'opencv_num_threads': 0}\n    dist_cfg: {'backend': 'nccl'}\n"
        "    seed: 1234\n    Distributed launcher: slurm\n    Distributed training: True\n    GPU number: 4\n"
        "------------------------------------------------------------\n\n"
    )
    config = "".join(
        f"    dict(type='{name}', prob={k / 100:.2f}, scale=(2048, 1024), keep_ratio=True),\n"
        for k in range(250)
        for name in ("RandomResize",)
    )
    hooks = (
        "".join(f"({p:<12}) {h:<35}\n" for p, h in (("VERY_HIGH", "RuntimeInfoHook"), ("NORMAL", "IterTimerHook"))) * 40
    )
    t = T0
    lines = [
        f"{_stamp(t)} - mmengine - INFO - {env}",
        f"{_stamp(t)} - mmengine - INFO - Config:\ntrain_pipeline = [\n{config}]\n"
        f"train_cfg = dict(max_iters={MAX_ITERS}, type='IterBasedTrainLoop', val_interval={VAL_INTERVAL})\n"
        f"work_dir = './work_dirs/{ts}'\n\n",
        f"{_stamp(t)} - mmengine - INFO - Hooks will be executed in the following order:\n{hooks}",
    ]
    if resume_from is not None:
        lines.append(f"{_stamp(t)} - mmengine - INFO - Load checkpoint from iter_{resume_from}.pth\n")
        lines.append(f"{_stamp(t)} - mmengine - INFO - resumed epoch: 0, iter: {resume_from}\n")
    lines.append(f"{_stamp(t)} - mmengine - WARNING - The prefix is not set in metric class IoUMetric.\n")
    lines.append(f"{_stamp(t)} - mmengine - INFO - Checkpoints will be saved to /work_dirs/{ts}.\n")
    return "".join(lines)


def _eta(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d} day{'s' if d > 1 else ''}, " if d else "") + f"{h}:{m:02d}:{s:02d}"


def _train(i: int, seed: int, t: float, ts: str) -> tuple[str, str]:
    lr = 0.01 * (1 - i / MAX_ITERS) ** 0.9 + 1e-4
    jitter = ((i * 7919 + seed * 104729) % 1000) / 1e5
    sec = SEC_PER_ITER + jitter
    loss = 0.2 + 0.8 / (1 + i / 4000) + jitter
    ce, acc, aux, aacc = loss * 0.7, 80 + 15 * i / MAX_ITERS + jitter, loss * 0.3, 78 + 15 * i / MAX_ITERS
    js = (
        f'{{"base_lr": 0.01, "lr": {lr!r}, "data_time": {0.01 + jitter!r}, "loss": {loss!r}, '
        f'"decode.loss_ce": {ce!r}, "decode.acc_seg": {acc!r}, "aux.loss_ce": {aux!r}, "aux.acc_seg": {aacc!r}, '
        f'"time": {sec!r}, "iter": {i}, "memory": 20512, "step": {i}}}\n'
    )
    text = (
        f"{_stamp(t)} - mmengine - INFO - Iter(train) [{i:5d}/{MAX_ITERS}]  base_lr: 1.0000e-02 lr: {lr:.4e}  "
        f"eta: {_eta((MAX_ITERS - i) * SEC_PER_ITER)}  time: {sec:.4f}  data_time: {0.01 + jitter:.4f}  "
        f"memory: 20512  loss: {loss:.4f}  decode.loss_ce: {ce:.4f}  decode.acc_seg: {acc:.4f}  "
        f"aux.loss_ce: {aux:.4f}  aux.acc_seg: {aacc:.4f}\n"
    )
    if i % 1000 == 0:
        text = f"{_stamp(t)} - mmengine - INFO - Exp name: config_{ts}\n" + text
    return js, text


def _val(i: int, seed: int, t: float) -> tuple[str, str]:
    miou = round(40 + 30 * i / MAX_ITERS + (seed % 7) / 10, 2)
    aacc, macc = round(miou + 25, 2), round(miou + 9, 2)
    progress = "".join(
        f"{_stamp(t)} - mmengine - INFO - Iter(val) [{k:3d}/{VAL_IMAGES}]    eta: 0:00:{(VAL_IMAGES - k) // 10:02d}  "
        "time: 0.1500  data_time: 0.0020  memory: 3000\n"
        for k in range(50, VAL_IMAGES + 1, 50)
    )
    table = "".join(f"|{c:^15}| {miou + (j % 5):5.2f} | {macc + (j % 3):5.2f} |\n" for j, c in enumerate(CLASSES))
    bar = "+---------------+-------+-------+\n"
    text = (
        f"{_stamp(t)} - mmengine - INFO - Saving checkpoint at {i} iterations\n"
        + progress
        + f"{_stamp(t)} - mmengine - INFO - per class results:\n{_stamp(t)} - mmengine - INFO - \n"
        + f"{bar}|     Class     |  IoU  |  Acc  |\n{bar}{table}{bar}"
        + f"{_stamp(t)} - mmengine - INFO - Iter(val) [{VAL_IMAGES}/{VAL_IMAGES}]    aAcc: {aacc:.4f}  "
        f"mIoU: {miou:.4f}  mAcc: {macc:.4f}  data_time: 0.0020  time: 0.1500\n"
    )
    js = f'{{"aAcc": {aacc!r}, "mIoU": {miou!r}, "mAcc": {macc!r}, "data_time": 0.002, "time": 0.15, "step": {i}}}\n'
    return js, text


def run_dir_of(root: Path, k: int) -> Path:
    return root / VARIANTS[k % len(VARIANTS)] / "baseline" / "cityscapes" / f"{MODELS[k % len(MODELS)]}_{k:04d}"


def write_run(work: Path, seed: int) -> None:
    last_end = IN_PROGRESS_END if seed % 10 == 0 else MAX_ITERS
    t = T0 + seed * 60.0
    for n, (first, end) in enumerate(STARTS):
        end = min(end, last_end) if n == len(STARTS) - 1 else end
        ts = time.strftime("%Y%m%d_%H%M%S", time.localtime(t))
        d = work / ts
        (d / "vis_data").mkdir(parents=True, exist_ok=True)
        js: list[str] = []
        text: list[str] = [log_header(ts, first - LOG_INTERVAL if n else None)]
        for i in range(first, end + 1, LOG_INTERVAL):
            t += LOG_INTERVAL * SEC_PER_ITER
            a, b = _train(i, seed, t, ts)
            js.append(a)
            text.append(b)
            if i % VAL_INTERVAL == 0:
                t += 75.0
                a, b = _val(i, seed, t)
                js.append(a)
                text.append(b)
        (d / "vis_data" / "scalars.json").write_text("".join(js))
        (d / f"{ts}.log").write_text("".join(text))
        (d / "vis_data" / "config.py").write_text(f"work_dir = './work_dirs/{ts}'\n")
        t += 3600.0  # the job died; the next one started an hour later
    (work / "last_checkpoint").write_text(str(work / f"iter_{last_end // VAL_INTERVAL * VAL_INTERVAL}.pth"))


def ensure_data(root: Path, runs: int) -> tuple[list[Path], float]:
    dirs = [run_dir_of(root, k) for k in range(runs)]

    def write() -> None:
        for k, d in enumerate(dirs):
            write_run(d, k)

    return dirs, generated(root, dict(PARAMS, runs=runs), write)


def generated(root: Path, params: dict[str, object], write: Callable[[], None]) -> float:
    """``root`` made afresh by ``write`` unless its marker says it was made with ``params`` (then reused): the
    seconds that took, 0 when reused (bench_root.py's roots too)."""
    marker = root / PARAMS_FILE
    try:
        if json.loads(marker.read_text()) == json.loads(json.dumps(params)):
            return 0.0
    except (OSError, ValueError):
        pass
    print(f"generating {params.get('runs')} runs under {root} ...", flush=True)
    t0 = time.perf_counter()
    if root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True)
    write()
    marker.write_text(json.dumps(params))
    return time.perf_counter() - t0


def append_lines(work: Path, seed: int, n_lines: int) -> tuple[list[tuple[Path, int]], int]:
    """Append ``n_lines`` train records to the last start's JSON and text logs; return (files, old sizes), bytes."""
    last = sorted(p for p in work.iterdir() if p.is_dir() and p.name[:8].isdigit())[-1]
    scalars, log = last / "vis_data" / "scalars.json", last / f"{last.name}.log"
    base = IN_PROGRESS_END
    js, text = [], []
    for k in range(1, n_lines + 1):
        a, b = _train(base + k * LOG_INTERVAL, seed, T0 + 1e6 + k, last.name)
        js.append(a)
        text.append(b)
    undo = [(scalars, scalars.stat().st_size), (log, log.stat().st_size)]
    added = 0
    for path, body in ((scalars, "".join(js)), (log, "".join(text))):
        with path.open("a") as fh:
            fh.write(body)
        added += len(body.encode())
    return undo, added


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--data", type=Path, default=REPO / "bench-data")
    ap.add_argument("--old-sample", type=int, default=20, help="runs the old line-by-line parser reads (0: skip)")
    args = ap.parse_args(argv)
    dirs, gen_s = ensure_data(args.data.resolve(), args.runs)
    total = sum(f.stat().st_size for d in dirs for f in d.glob("2*/**/*") if f.suffix in (".json", ".log"))
    print(f"data: {args.runs} runs, {total / 1e6:.0f} MB of logs" + (f" (generated in {gen_s:.0f} s)" if gen_s else ""))

    def cold() -> list[RunLog]:
        return [read_run_log(d) for d in dirs]

    rows: list[tuple[str, float, str]] = []
    cold_s, cold_logs = timed(cold, repeat=2)
    rows.append(("cold: no cache (= full re-parse)", cold_s, ""))

    def cold_prefetched() -> list[RunLog]:  # what a first `prove-jobs status` does
        fresh = LogCache()
        fresh.prefetch(dirs)
        return [fresh.read_run_log(d) for d in dirs]

    workers = min(os.cpu_count() or 1, 8)
    pre_s, pre_logs = timed(cold_prefetched, repeat=2)
    assert pre_logs == cold_logs, "parallel and sequential cold reads differ"
    rows.append((f"cold: prefetch in {workers} processes (status)", pre_s, f"{cold_s / pre_s:.1f}x faster"))
    sample = dirs[: args.old_sample]
    if sample:
        old_s, old_logs = timed(lambda: [read_run_log_full(d) for d in sample])
        assert old_logs == [cold_logs[k] for k in range(len(sample))], "sparse and full parse differ"
        est = old_s * len(dirs) / len(sample)
        rows.append((f"old line-by-line parser ({len(sample)} runs, scaled)", est, f"{est / cold_s:.0f}x cold"))

    cache = LogCache()
    for d in dirs:
        cache.read_run_log(d)
    warm_s, warm_logs = timed(lambda: [cache.read_run_log(d) for d in dirs], repeat=3)
    assert warm_logs == cold_logs
    rows.append(("warm refresh, in-memory cache", warm_s, f"{cold_s / warm_s:.0f}x faster"))
    with tempfile.TemporaryDirectory() as tmp:
        cache_file = Path(tmp) / "logs.pickle"
        save_s, _ = timed(lambda: cache.save(cache_file))
        size = cache_file.stat().st_size

        def from_disk() -> list[RunLog]:
            loaded = LogCache.load(cache_file)
            return [loaded.read_run_log(d) for d in dirs]

        disk_s, disk_logs = timed(from_disk, repeat=3)
        assert disk_logs == cold_logs
        rows.append(
            (f"warm refresh, cache file ({size / 1e6:.1f} MB) loaded", disk_s, f"{cold_s / disk_s:.0f}x faster")
        )

        growing = [d for k, d in enumerate(dirs) if k % 10 == 0][: max(1, len(dirs) // 100)]
        undo: list[tuple[Path, int]] = []
        appended = 0
        try:
            for k, d in enumerate(growing):
                u, n = append_lines(d, k, 50)
                undo += u
                appended += n
            mem_s, mem_logs = timed(lambda: [cache.read_run_log(d) for d in dirs])
            disk_app_s, _ = timed(from_disk)
            recold_s, recold_logs = timed(cold)
            assert mem_logs == recold_logs, "incremental refresh differs from a re-parse"
            rows.append((f"append: {len(growing)} runs +50 lines, full re-parse", recold_s, ""))
            rows.append(("append: refresh, in-memory cache", mem_s, f"{recold_s / mem_s:.0f}x faster"))
            rows.append(("append: refresh, cache file loaded", disk_app_s, f"{recold_s / disk_app_s:.0f}x faster"))
        finally:
            for path, size_before in undo:
                os.truncate(path, size_before)
        rows.append(("(cache file save)", save_s, ""))

    from prove_jobs.discover import discover_runs
    from prove_jobs.status import collect_status

    disc_s, runs = timed(lambda: discover_runs(args.data.resolve()))
    coll_s, _ = timed(lambda: collect_status(runs))
    rows.append((f"collect_status end to end ({len(runs)} runs, uncached)", disc_s + coll_s, ""))

    print(f"appended: {appended} bytes in {2 * len(growing)} files; total log size {total / 1e6:.0f} MB")
    print(f"{'measure':<56} {'seconds':>9}  ratio")
    for name, secs, ratio in rows:
        print(f"{name:<56} {secs:>9.3f}  {ratio}")
    commands(args.data.resolve(), len(dirs))
    return 0


# ---------------------------------------------------------------------------------------------
# The command as a user runs it: start-up, and the system calls of a refresh


PRINT_CALLS = """
import os, sys
from prove_jobs.discover import discover_runs
from prove_jobs.status_source import StatusSource
source = StatusSource(discover_runs(sys.argv[1]))
source.collect()
os.path.exists("/prove-jobs-bench-mark")  # where the second refresh begins, in the trace
source.collect()
"""


def commands(data: Path, n_runs: int) -> None:
    """Start-up times against the bare interpreter, and path system calls per run, each side by side in one run."""
    import shutil
    import statistics
    import subprocess

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "root"
        for k in range(14):
            write_run(run_dir_of(small, k), k)
        # As a user's install runs: with byte code (pip compiles on install; an editable install
        # writes __pycache__ on first use). PYTHONDONTWRITEBYTECODE, set on some machines, would
        # time compiling every prove_jobs module on each start instead.
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        import compileall

        compileall.compile_dir(REPO / "prove_jobs", quiet=1)
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "prove-jobs --help": [str(bin_dir / "prove-jobs"), "--help"],
            "prove-jobs status --root <14 runs> --json (warm)": [str(bin_dir / "prove-jobs"), "status", "--root",
                                                                 str(small), "--json"],
        }
        subprocess.run(cases["prove-jobs status --root <14 runs> --json (warm)"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fills the cache
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(15):  # interleaved: a busy moment of the machine hits every case alike
            for name, command in cases.items():
                t0 = time.perf_counter()
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t0)
        bare = statistics.median(times["python -c pass"])
        print(f"\n{'start-up (median of 15, interleaved)':<56} {'seconds':>9}  vs bare interpreter")
        for name, values in times.items():
            print(f"{name:<56} {statistics.median(values):>9.3f}  {statistics.median(values) / bare:.1f}x")

        status = [str(bin_dir / "prove-jobs"), "status", "--root", str(data), "--json"]
        report = [str(bin_dir / "prove-jobs"), "report", "--root", str(data), "--format", "json"]
        for command in (status, report):  # fills the cache file with what each reads (report: training times)
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pair: dict[str, list[float]] = {"status": [], "report": []}
        for _ in range(5):  # interleaved, as above
            for name, command in (("status", status), ("report", report)):
                t0 = time.perf_counter()
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                pair[name].append(time.perf_counter() - t0)
        warm_status, warm_report = statistics.median(pair["status"]), statistics.median(pair["report"])
        print(f"\n{f'warm, {n_runs} runs (median of 5, interleaved)':<56} {'seconds':>9}  vs status")
        print(f"{'prove-jobs status --root DATA --json':<56} {warm_status:>9.3f}  1.0x")
        ratio = warm_report / warm_status
        print(f"{'prove-jobs report --root DATA --format json':<56} {warm_report:>9.3f}  {ratio:.1f}x")

        if shutil.which("strace") is None:
            print("\n(strace not installed: system calls not counted; apt-get install strace)")
            return
        print(f"\n{'path system calls touching the data root (strace)':<56} {'calls':>9}  per run")
        for root, runs in ((small, 14), (data, n_runs)):
            trace = Path(tmp) / "trace"
            subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(trace), sys.executable, "-c",
                            PRINT_CALLS, str(root)], env={**env, "PYTHONPATH": str(REPO)}, check=True)
            lines = trace.read_text().splitlines()
            mark = next(i for i, line in enumerate(lines) if "/prove-jobs-bench-mark" in line)
            ours = [line for line in lines[mark:] if f'"{root}' in line]
            print(f"{'warm refresh of ' + str(runs) + ' unchanged runs':<56} {len(ours):>9}  {len(ours) / runs:.1f}")
            status = [str(bin_dir / "prove-jobs"), "status", "--root", str(root), "--json"]
            subprocess.run(status, env=env, check=True, stdout=subprocess.DEVNULL)  # warm
            subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(trace), *status], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            whole = [line for line in trace.read_text().splitlines() if f'"{root}' in line]
            print(f"{'prove-jobs status --root (finds the runs, warm)':<56} {len(whole):>9}  {len(whole) / runs:.1f}")


if __name__ == "__main__":
    sys.exit(main())
