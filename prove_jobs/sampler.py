"""The efficiency sampler: a process beside the training that writes down what the training uses.

The payload (rank 0) wraps ``train()`` in :func:`sampling`, which starts ``python -m prove_jobs.sampler``: a
process of its own, not a thread, so nothing it does (an ``nvidia-smi`` that hangs on a sick GPU, a slow shared
filesystem) can stall the training or take its GIL. Every :data:`EVERY_S` seconds it appends one JSON line to
``prove/samples.jsonl`` in the run dir:

* ``{"t": 1718000000.1, "cpu": 46.8, "rss_mb": 1500.2, "gpu": [[97, 20481, 81559], ...]}``: wall time (the
  node's clock), CPU use of the training process and its children (percent of the ``cores`` it may use), their
  resident memory summed (as SLURM's ``jobacct_gather/linux`` sums a step's), and per visible GPU its
  utilisation (%), memory used and total (MiB) from ``nvidia-smi`` (no ``gpu`` key on a CPU-only job);
* a start line ``{"start": t, "host": ..., "pid": ..., "every": 10, "cores": 4}`` first (``"cont": true`` when
  it only continues a start in a new file).

Every :data:`SUMMARY_EVERY_S` (and at its end) it also rewrites ``prove/usage.json`` (atomically): per start its
samples summed up (count, mean utilisation, peak memory, first and last time), so that a report over many
long runs reads a few hundred bytes a run instead of parsing days of samples.

Stdlib only, and cheap to import: the payload imports it on the login node too (to pickle the job).
The file is opened once, ``O_APPEND | O_NOFOLLOW``, in a ``prove/`` reached without following anyone
else's link (:mod:`prove_jobs.fsafe`); at :data:`MAX_BYTES` it is renamed to ``samples.1.jsonl`` (the one before
is dropped) and a new one begun, so a run never holds more than twice that. Everything is best effort: a
sampler that cannot start or write says so once in the job's stderr; the training never waits for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from prove_jobs.identity import pid_alive

# typing.TYPE_CHECKING would import typing; mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SAMPLES_FILE = "samples.jsonl"  # in the run dir's prove/
USAGE_FILE = "usage.json"  # the samples summed up per start, rewritten every SUMMARY_EVERY_S
SUMMARY_EVERY_S = 60.0
MAX_STARTS = 1000  # starts kept in usage.json (the newest)
OLD_SAMPLES_FILE = "samples.1.jsonl"  # the previous MAX_BYTES, once the file reached them
EVERY_S = 10.0  # seconds between samples: 8,640 a day, ~60 bytes each (plus ~25 per GPU)
EVERY_ENV = "PROVE_JOBS_SAMPLE_EVERY_S"  # overrides EVERY_S (the tests sample every second)
MAX_BYTES = 4 << 20  # per file: about 8 days of one GPU at 10 s, 3 days of 8
GPU_TIMEOUT_S = 5.0  # nvidia-smi can hang on a GPU that fell off the bus: that sample goes without GPUs
GPU_QUERY = ("--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits")
NO_GPU = ("", "-1", "NoDevFiles", "none")  # CUDA_VISIBLE_DEVICES that hide every GPU


@contextlib.contextmanager
def sampling(run_dir: Path, *, cores: int | None = None) -> Iterator[None]:
    """Sample this process (the training) into ``run_dir/prove/samples.jsonl`` while the block runs.

    ``cores``: the CPUs the job asked for (``cpus_per_task``); CPU use is read against the fewer of those and the
    CPUs this process may run on. The sampler ends with the block (SIGTERM: it writes a last sample), or within
    one interval of this process's end (it is killed with SIGKILL: SLURM kills the step anyway).
    """
    every = _every()
    command = [sys.executable, "-m", "prove_jobs.sampler", str(run_dir), str(os.getpid()), f"{every:g}",
               str(cores or 0)]
    try:
        # stdout closed, stderr the job's: a sampler's one-line warning lands where a user looks
        process: subprocess.Popen[bytes] | None = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                                                   stdout=subprocess.DEVNULL, close_fds=True)
    except OSError as exc:
        _warn(f"efficiency sampler not started ({exc}); the run trains unsampled")
        process = None
    try:
        yield
    finally:
        if process is not None:
            with contextlib.suppress(OSError):
                process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=GPU_TIMEOUT_S + 2)  # its last sample may wait for nvidia-smi
            if process.poll() is None:
                process.kill()
                process.wait()


def _every() -> float:
    try:
        every = float(os.environ.get(EVERY_ENV, EVERY_S))
    except ValueError:
        return EVERY_S
    return every if 0.1 <= every <= 3600 else EVERY_S


def _warn(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"prove-jobs: {message}\n")
        sys.stderr.flush()


# --- what a process uses, from /proc ------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the data loader's workers), through ``/proc/<pid>/task/*/children``; not this
    process (the sampler, a child of the training) nor its own children (nvidia-smi)."""
    found: list[int] = []
    todo, me = [pid], os.getpid()
    while todo and len(found) < 4096:
        current = todo.pop()
        if current == me:
            continue
        found.append(current)
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError), open(f"/proc/{current}/task/{tid}/children", "rb") as file:
                todo += [int(child) for child in file.read().split()]
    return found


def cpu_ticks(pid: int) -> int:
    """The CPU time of ``pid`` (all its threads) and of its children it has waited for, in clock ticks; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
        return sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    except (OSError, IndexError, ValueError):
        return 0


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def allowed_cores(pid: int, asked: int | None) -> int:
    """The CPUs the training may use: those it may run on (SLURM's cpuset), at most what the job asked for."""
    try:
        cores = len(os.sched_getaffinity(pid))
    except OSError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, asked) if asked else cores)


# --- GPUs, from nvidia-smi ------------------------------------------------------------------------------


def visible_gpus(env: dict[str, str] | os._Environ[str]) -> str | None:
    """The GPUs the job sees (``CUDA_VISIBLE_DEVICES``: indices or UUIDs), ``None`` on a CPU-only job."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    return None if visible is None or visible.strip() in NO_GPU else visible.strip()


def parse_gpu_csv(text: str) -> list[list[float | None]]:
    """``nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits``: one
    ``[util %, used MiB, total MiB]`` per line; ``[N/A]`` or ``[Not Supported]`` (a MIG slice) is ``None``."""
    gpus = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 3:
            continue
        gpus.append([_number(cell) for cell in cells])
    return gpus


def sample_util(cpu: float | None, gpus: list[float | None]) -> float | None:
    """A sample's utilisation (%): the mean over its GPUs (those nvidia-smi gave one for); without GPUs its CPU use
    over the cores allowed, at most 100."""
    if gpus:
        known = [min(util, 100.0) for util in gpus if util is not None]
        return sum(known) / len(known) if known else None
    return None if cpu is None else min(cpu, 100.0)


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if 0 <= value < 1e9 else None


class GpuQuery:
    """Ask nvidia-smi about the job's GPUs (``-i`` its visible list; every GPU when that list is not one nvidia-smi
    takes, as MIG UUIDs); gives up for good when nvidia-smi is missing."""

    def __init__(self, visible: str | None) -> None:
        import shutil

        self.command: list[str] | None = None
        smi = shutil.which("nvidia-smi") if visible is not None else None
        if smi is not None and visible is not None:
            self.command = [smi, *GPU_QUERY, f"--id={visible}"]
        self.warned = False

    def __call__(self) -> list[list[float | None]] | None:
        if self.command is None:
            return None
        try:
            done = subprocess.run(self.command, capture_output=True, text=True, timeout=GPU_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return None
        except OSError:
            self.command = None
            return None
        if done.returncode != 0 and self.command[-1].startswith("--id="):
            self.command = self.command[:-1]  # ids nvidia-smi does not take: ask about every GPU it shows
            return self()
        if done.returncode != 0 and not self.warned:
            self.warned = True
            _warn(f"efficiency sampler: nvidia-smi failed ({' '.join(done.stderr.split())[:200]}); GPUs not sampled")
        return parse_gpu_csv(done.stdout) if done.returncode == 0 else None


class Probe:
    """One sample of a process tree at a time: CPU use since the last one, memory now, the GPUs."""

    def __init__(self, pid: int, cores: int | None, gpus: GpuQuery) -> None:
        self.pid, self.gpus = pid, gpus
        self.cores = allowed_cores(pid, cores)
        self.tick = os.sysconf("SC_CLK_TCK")
        self.ticks, self.at = self._ticks(), time.monotonic()

    def _ticks(self) -> tuple[int, list[int]]:
        tree = process_tree(self.pid)
        return sum(cpu_ticks(p) for p in tree), tree

    def sample(self) -> tuple[float, float, float, list[list[float | None]]]:
        """(time, CPU % of the cores allowed, resident MiB, per GPU [util %, used MiB, total MiB])."""
        (ticks, tree), at = self._ticks(), time.monotonic()
        cpu = max(0, ticks - self.ticks[0]) / self.tick / max(at - self.at, 1e-3) / self.cores * 100
        self.ticks, self.at = (ticks, tree), at
        gpus = [[None if v is None else float(round(v)) for v in gpu] for gpu in self.gpus() or []]
        return round(time.time(), 1), round(cpu, 1), round(sum(rss_bytes(p) for p in tree) / 2**20, 1), gpus


# --- the file ---------------------------------------------------------------------------------------------


class Appender:
    """``prove/samples.jsonl``, appended to; at :data:`MAX_BYTES` moved to ``samples.1.jsonl`` and begun again."""

    def __init__(self, run_dir: str, header: dict[str, object]) -> None:
        from pathlib import Path

        from prove_jobs.fsafe import open_dir
        from prove_jobs.runs import CONFIG_DIR

        self.dir_fd = open_dir(Path(run_dir) / CONFIG_DIR)
        self.header = header
        self.fd = self._open()
        self.write(header)

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(SAMPLES_FILE, flags, 0o666, dir_fd=self.dir_fd)  # the payload's umask (group-writable)

    def write(self, line: dict[str, object]) -> None:
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        if os.fstat(self.fd).st_size + len(data) > MAX_BYTES:
            os.replace(SAMPLES_FILE, OLD_SAMPLES_FILE, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            os.close(self.fd)
            self.fd = self._open()
            os.write(self.fd, (json.dumps({**self.header, "cont": True}, separators=(",", ":")) + "\n").encode())
        os.write(self.fd, data)  # one write of one line, O_APPEND: a reader sees whole lines or a cut last one


class Tally:
    """One start's samples summed up, and the starts before it (``usage.json``), written whole every so often."""

    def __init__(self, run_dir: str, header: dict[str, object]) -> None:
        from pathlib import Path

        from prove_jobs.runs import CONFIG_DIR

        self.path = Path(run_dir) / CONFIG_DIR / USAGE_FILE
        self.before = _earlier_starts(self.path, Path(run_dir))
        self.header = {key: header[key] for key in ("start", "host", "every", "cores")}
        self.last, self.n, self.util_n, self.util_sum = header["start"], 0, 0, 0.0
        self.peaks: dict[str, float | None] = dict.fromkeys(("peak_rss_mb", "peak_gpu_mb", "gpu_total_mb"))
        self.gpu = False
        self.written = time.monotonic()

    def add(self, t: float, cpu: float | None, rss_mb: float | None, gpus: list[list[float | None]]) -> None:
        util = sample_util(cpu, [g[0] for g in gpus])
        self.n, self.last, self.gpu = self.n + 1, t, self.gpu or bool(gpus)
        if util is not None:
            self.util_n, self.util_sum = self.util_n + 1, self.util_sum + util
        for key, value in (("peak_rss_mb", rss_mb),
                           ("peak_gpu_mb", max((g[1] for g in gpus if g[1] is not None), default=None)),
                           ("gpu_total_mb", max((g[2] for g in gpus if g[2] is not None), default=None))):
            known = self.peaks[key]
            if value is not None and (known is None or value > known):
                self.peaks[key] = value

    def save(self, *, now: bool = False) -> None:
        if not now and time.monotonic() - self.written < SUMMARY_EVERY_S:
            return
        from prove_jobs.fsafe import atomic_write_text

        entry = {**self.header, "last": self.last, "n": self.n, "util_n": self.util_n,
                 "util_sum": round(self.util_sum, 1), **self.peaks, "gpu": self.gpu}
        starts = [*self.before, entry][-MAX_STARTS:]
        atomic_write_text(self.path, json.dumps({"v": 1, "starts": starts}, separators=(",", ":")) + "\n")
        self.written = time.monotonic()


def _earlier_starts(path: Path, run_dir: Path) -> list[object]:
    """The starts ``usage.json`` holds already (each checked by its reader); none where it is not one."""
    from prove_jobs.safe_read import read_capped

    try:
        data = json.loads(read_capped(path, 1 << 20, below=run_dir))
    except Exception:  # missing, not a file, planted, not JSON: begun again (the reader checks each entry)
        return []
    starts = data.get("starts") if isinstance(data, dict) else None
    return [entry for entry in starts if isinstance(entry, dict)] if isinstance(starts, list) else []


def run(run_dir: str, pid: int, every: float, cores: int | None) -> int:
    """Sample ``pid`` every ``every`` seconds until it, or our parent, is gone, or SIGTERM comes."""
    # SLURM's --signal=USR2@90 goes to every process of the step: the sampler is not the one to stop there
    for name in ("SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    parent = os.getppid()
    _die_with_parent()
    probe = Probe(pid, cores, GpuQuery(visible_gpus(os.environ)))
    header: dict[str, object] = {"start": round(time.time(), 1), "host": _host(), "pid": pid, "every": every,
                                 "cores": probe.cores}
    try:
        out, tally = Appender(run_dir, header), Tally(run_dir, header)
    except Exception as exc:  # OSError, or fsafe's refusal of a link someone else made
        _warn(f"efficiency sampler: cannot write {run_dir}/prove/{SAMPLES_FILE} ({exc}); the run trains unsampled")
        return 1
    while True:
        stopped = signal.sigtimedwait({signal.SIGTERM}, every) is not None
        if os.getppid() != parent or not pid_alive(pid):
            return 0  # the training is gone (SIGKILL, or prctl's SIGTERM for it): a sample now would read 0
        try:
            t, cpu, rss, gpus = probe.sample()
            out.write({"t": t, "cpu": cpu, "rss_mb": rss, **({"gpu": gpus} if gpus else {})})
            tally.add(t, cpu, rss, gpus)
            tally.save(now=stopped)
        except Exception as exc:  # a full disk, a link planted since: say it once and stop
            _warn(f"efficiency sampler: cannot write {run_dir}/prove/{SAMPLES_FILE} ({exc}); sampling stopped")
            return 1
        if stopped:
            return 0


    return True


def _die_with_parent() -> None:
    """SIGTERM (blocked: seen by sigtimedwait) when the training process ends, at once, where prctl exists."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _host() -> str:
    import socket

    return socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        run_dir, pid, every, cores = args[0], int(args[1]), float(args[2]), int(args[3])
        return run(run_dir, pid, every, cores or None)
    except (IndexError, ValueError):
        _warn("usage: python -m prove_jobs.sampler RUN_DIR PID EVERY_S CORES")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
