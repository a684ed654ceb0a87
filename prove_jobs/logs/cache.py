"""The persistent log cache: per-file states and run summaries kept across ``status`` calls.

A new process with nothing changed loads the run summaries and stats the files, nothing
else; the per-file states are one small blob per run dir, unpacked only when a file of that
run changed. The runs' training times (:meth:`LogCache.training_time`, for the report) are one
more blob, unpacked only by a process that asks for one. Plain tuples, written with ``marshal``
(built in: loading it imports nothing, where pickle was a twentieth of a warm ``status``
start-up); the file is the user's own (one owned by anyone else is not loaded), and any damage
(or another Python's marshal format) means a cold start.

Each run has a last-seen time; :meth:`LogCache.save` leaves out the runs seen gone, unseen too long
or beyond the cap (:mod:`prove_jobs.logs.cache_files`, which also keeps one file per scope).
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

from prove_jobs.logs.cache_files import MAX_AGE_S, MAX_RUNS, SEEN_EVERY_S, default_cache_path, scope_line
from prove_jobs.logs.layout import RunFiles, find_run_files, run_dir_of
from prove_jobs.logs.runlog import EMPTY, LIMITS, RunLog, TrainPoint, ValPoint

TYPE_CHECKING = False  # not typing's: see runlog.py
if TYPE_CHECKING:
    from prove_jobs.logs.filestate import FileState
    from prove_jobs.logs.lineage import Start
    from prove_jobs.logs.times import TrainingTime

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_FILE_ROW_LENGTH = 20  # fields in FileState.to_row()
# change it whenever FileState or a run memo changes; marshal's format is Python's own
# (7: the training times memo, a fourth item; 8: the values left out of a file, and of a run;
# 9: each run's last-seen time, a fifth item, after a line naming the scope;
# 11: log formats, epoch loops (one branch) or a start's last training line, where it resumed, a test start,
# a run's lineage (another); 12: both)
_CACHE_FORMAT = f"prove-jobs-logcache-12-marshal{marshal.version}-{sys.hexversion >> 16:x}"

__all__ = ["LogCache", "default_cache_path"]


class LogCache:
    """Keeps per-file (inode, size, offset, summary) so a re-read parses only appended bytes.

    :meth:`save` / :meth:`load` keep it across invocations (plain tuples in marshal's format, loaded
    without importing anything).
    """

    def __init__(self, *, sparse: bool = True) -> None:
        self._files: dict[tuple[str, str], FileState] = {}
        self._sparse = sparse
        self._runs: dict[str, tuple[object, RunLog]] = {}  # work dir -> (what it was built from, result)
        self._rows: dict[tuple[str, str], tuple[Any, ...]] = {}  # loaded file states not needed yet
        # The file states from the cache file, one marshal blob per run dir, unpacked only when a file
        # of that run changed: an unchanged sweep needs nothing but the run summaries.
        self._blobs: dict[str, bytes] = {}
        # Training times: work dir -> (files key, TrainingTime); from the cache file one marshal blob,
        # unpacked on the first training_time() (a status never asks for one).
        self._times: dict[str, tuple[object, TrainingTime]] = {}
        self._times_blob: bytes | None = None
        self._seen: dict[str, float] = {}  # work dir -> when a status last asked for it (Unix seconds)
        self._gone: set[str] = set()  # work dirs found missing: their entries leave at the save
        # work dir -> the files read_run_log just found there: the next training_time of it takes them (once)
        # instead of listing the run dir again; kept only where training times follow (report), not in status
        self.keep_listings = False
        self._listed: dict[str, tuple[RunFiles, object]] = {}  # (its files, their key)
        self.dirty = False  # something was read since the load: worth saving
        self.clock: Callable[[], float] = time.time  # when a run was seen; a test moves it on two weeks

    @property
    def run_dirs(self) -> list[str]:
        """The run dirs whose logs it holds, put together or still packed as loaded."""
        return sorted(self._runs.keys() | self._blobs.keys())

    def _saw(self, work_dir: str) -> None:
        now = self.clock()
        if now - self._seen.get(work_dir, 0.0) > SEEN_EVERY_S:  # once a day is enough to keep it from ageing out
            self._seen[work_dir] = now
            self.dirty = True

    def _unpack(self, group: str) -> None:
        blob = self._blobs.pop(group, None)
        if blob is None:
            return
        try:
            body = marshal.loads(blob)
            rows = {(str(p), str(kind)): tuple(row) for p, kind, row in body}
        except Exception:  # damaged: that run's files are read afresh
            return
        self._rows.update((key, row) for key, row in rows.items() if len(row) == _FILE_ROW_LENGTH)

    def _get(
        self, path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None
    ) -> FileState | None:
        from prove_jobs.logs.filestate import FileState, read_file  # the parsing modules: a file changed

        self.dirty = True
        if not self._sparse and kind == "texttail":
            kind = "text"
        key = (str(path), kind)
        old = self._files.get(key)
        if old is None and self._blobs:
            self._unpack(run_dir_of(key[0]))
        if old is None and key in self._rows:  # from the cache file: built when first needed
            try:
                old = FileState.from_row(self._rows.pop(key))
            except (ValueError, TypeError):
                old = None  # a damaged entry: read the file afresh
        state = read_file(path, kind, old, warnings, self._sparse, st)
        if state is None:
            self._files.pop(key, None)
        else:
            self._files[key] = state
        return state

    def read_run_log(self, work_dir: Path, entries: Sequence[os.DirEntry[str]] | None = None) -> RunLog:
        """The run's log; ``entries``: the run dir's listing if the caller made one (saves a system call).

        A run with no new start and whose newest start's files did not change is answered from the
        memo, without reading anything else: mmengine never writes into an older start.
        """
        files = find_run_files(work_dir, entries)
        if isinstance(files, RunLog):
            if files is EMPTY and str(work_dir) in self._seen:  # the run dir is gone: so are its entries
                self._gone.add(str(work_dir))
                self.dirty = True
            return files
        self._saw(str(work_dir))
        key = files.key(self._sparse)
        if self.keep_listings:
            self._listed[str(work_dir)] = files, key
        hit = self._runs.get(str(work_dir))
        if hit is not None and hit[0] == key:
            return hit[1]
        from prove_jobs.logs.assemble import assemble  # putting a run together: only when it changed

        log, clean = assemble(Path(work_dir), files, self._get, self._sparse)
        self.dirty = True
        if clean:
            self._runs[str(work_dir)] = (key, log)
        return log

    def training_time(self, work_dir: Path, entries: Sequence[os.DirEntry[str]] | None = None) -> TrainingTime:
        """The run's training time (:class:`~prove_jobs.logs.times.TrainingTime`), memoized like :meth:`read_run_log`.

        Keyed by the same files key: a run with no new start and whose newest start's files did not
        change is answered without reading anything. A changed run is timed again from all its logs.
        """
        from prove_jobs.logs.times import NO_TIME, TrainingTime, read_training_time

        listed = self._listed.pop(str(work_dir), None) if entries is None else None
        files = listed[0] if listed is not None else find_run_files(work_dir, entries)
        if isinstance(files, RunLog):
            return NO_TIME
        self._saw(str(work_dir))
        key = listed[1] if listed is not None else files.key(self._sparse)  # its files as read_run_log just saw
        if self._times_blob is not None:
            self._unpack_times(TrainingTime)
        hit = self._times.get(str(work_dir))
        if hit is not None and hit[0] == key:
            return hit[1]
        result, clean = read_training_time(Path(work_dir), files)
        self.dirty = True
        if clean:
            self._times[str(work_dir)] = (key, result)
        else:
            self._times.pop(str(work_dir), None)
        return result

    def _unpack_times(self, kind: type[TrainingTime]) -> None:
        """All of them at once, the GC paused: tens of thousands of small tuples, none in a cycle (see load)."""
        blob, self._times_blob = self._times_blob, None
        with gc_paused():
            try:
                rows = marshal.loads(blob or b"")
                entries = [(str(work_dir), key, row) for work_dir, key, row in rows]
            except Exception:  # damaged: every run is timed afresh
                return
            for work_dir, key, row in entries:
                with contextlib.suppress(ValueError, TypeError):  # a damaged entry: that run is timed afresh
                    self._times[work_dir] = (key, kind.from_row(row))

    def prefetch(self, work_dirs: Sequence[Path], *, workers: int | None = None) -> int:
        """Read the run dirs this cache has never seen in ``workers`` processes; returns how many.

        A cold ``status`` of a big sweep is parsing bound: worker processes (forked, each with a
        cache of its own) read one share of the unseen runs each, and their file states and
        run summaries are merged here, so that :meth:`read_run_log` then finds every run done.
        Runs already known are left to the incremental path; few unseen runs are not worth it.
        """
        unseen = [str(d) for d in work_dirs if str(d) not in self._runs]
        workers = min(workers or os.cpu_count() or 1, 8, len(unseen) // LIMITS.prefetch_min_runs_per_worker)
        if workers < 2:
            return 0
        import concurrent.futures  # a warm status never gets here: it does not pay for these imports
        import multiprocessing

        if "fork" not in multiprocessing.get_all_start_methods():
            return 0
        shares = [unseen[i::workers] for i in range(workers)]
        context = multiprocessing.get_context("fork")  # the parent's imports and state, no re-import
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for files, runs in pool.map(_read_share, shares, [self._sparse] * workers):
                self._rows.update(files)
                self._runs.update(runs)
        self.dirty = True
        return len(unseen)

    def read_text_log(self, path: Path) -> RunLog:
        from prove_jobs.logs.assemble import read_text_log_with

        return read_text_log_with(Path(path), self._get)

    def forget_unlisted(self, scope: Path, listed: Collection[str]) -> None:
        """``listed`` is every run dir under ``scope`` (``status --root`` just listed them): any other run
        under it is gone, and its entries leave at the next save."""
        inside, listed = str(scope).rstrip(os.sep) + os.sep, set(listed)
        gone = {d for d in (*self._blobs, *self._runs, *self._seen) if d.startswith(inside) and d not in listed}
        if gone - self._gone:
            self._gone |= gone
            self.dirty = True

    def save(self, path: Path, *, scope: Path | None = None) -> None:
        """Write the cache atomically (a temp file, then rename); errors are left to the caller.

        ``scope``: the folder this file is for (its first line). The entries of runs seen gone, unseen for
        ``MAX_AGE_S`` or beyond ``MAX_RUNS`` (the longest unseen first) are left out.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        groups: dict[str, list[tuple[str, str, tuple[Any, ...]]]] = {}
        rows = {**self._rows, **{key: st.to_row() for key, st in self._files.items()}}
        for (p, kind), row in rows.items():
            groups.setdefault(run_dir_of(p), []).append((p, kind, row))
        blobs = dict(self._blobs)  # runs not looked at in this process: kept as they were
        blobs.update((group, marshal.dumps(tuple(items)))
                     for group, items in groups.items())
        leaving = self._leaving([*blobs, *self._runs, *self._seen])
        if leaving:
            if self._times_blob is not None:
                self._unpack_times(_times_kind())
            for work_dir in leaving:
                for memo in (blobs, self._runs, self._seen, self._times):
                    memo.pop(work_dir, None)
        times = self._times_blob  # as loaded, when no run was timed in this process
        if times is None:
            entries: Any = tuple((d, key, t.to_row()) for d, (key, t) in self._times.items())
            times = marshal.dumps(entries)
        body: Any = (
            _CACHE_FORMAT,
            tuple(blobs.items()),
            tuple((work_dir, key, _log_to_row(log)) for work_dir, (key, log) in self._runs.items()),
            times,
            tuple(self._seen.items()),
        )
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(scope_line(scope))
                fh.write(marshal.dumps(body))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _leaving(self, work_dirs: list[str]) -> set[str]:
        """The work dirs whose entries leave at this save: gone, too long unseen, or beyond the cap."""
        now = self.clock()
        seen = {work_dir: self._seen.get(work_dir, now) for work_dir in work_dirs}  # never seen: just made
        leaving = {d for d, at in seen.items() if now - at > MAX_AGE_S} | (self._gone & seen.keys())
        staying = len(seen) - len(leaving)
        if staying > MAX_RUNS:  # the longest unseen first
            leaving.update(sorted((d for d in seen if d not in leaving), key=seen.__getitem__)[:staying - MAX_RUNS])
        return leaving

    @classmethod
    def load(cls, path: Path) -> LogCache:
        """The cache saved at ``path``; an empty one if it is missing, corrupt or of another format."""
        cache = cls()
        try:
            # Tens of thousands of small objects at once: the cyclic GC would walk them again and
            # again while they are made (it tripled the load time), and none of them form cycles.
            with gc_paused():
                with Path(path).open("rb") as fh:
                    if os.fstat(fh.fileno()).st_uid != os.getuid():
                        return cache  # written by someone else: marshal is not for untrusted data
                    fh.readline()  # the scope: for cache_files.sweep_folder
                    body = marshal.loads(fh.read())
                if not (isinstance(body, tuple) and len(body) == 5 and body[0] == _CACHE_FORMAT):
                    return cache
                blobs = {str(group): blob for group, blob in body[1]}
                if not all(isinstance(blob, bytes) for blob in blobs.values()):
                    raise ValueError("bad file states")
                runs = {str(work_dir): (key, _log_from_row(row)) for work_dir, key, row in body[2]}
                times = body[3] if isinstance(body[3], bytes) else None  # damaged: the runs are timed afresh
                seen = {str(work_dir): float(at) for work_dir, at in body[4]}
        except Exception:  # any damage means: start cold
            return cache
        cache._blobs = blobs
        cache._runs = runs
        cache._times_blob = times
        cache._seen = seen
        return cache


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic GC off while tens of thousands of small objects are made that form no cycle (a cache's
    entries, a status per run, their JSON): each full collection would walk all of them again (a third of a
    warm 10,000-run ``status``). What a cycle leaves meanwhile is collected after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _start_kind() -> type[Start]:
    from prove_jobs.logs.lineage import Start

    return Start


def _times_kind() -> type[TrainingTime]:
    from prove_jobs.logs.times import TrainingTime

    return TrainingTime


def _read_share(work_dirs: list[str], sparse: bool) -> tuple[dict[tuple[str, str], tuple[Any, ...]],
                                                               dict[str, tuple[object, RunLog]]]:
    """In a worker: read ``work_dirs`` into a fresh cache and hand back its states as plain rows."""
    cache = LogCache(sparse=sparse)
    for work_dir in work_dirs:
        cache.read_run_log(Path(work_dir))
    return {key: state.to_row() for key, state in cache._files.items()}, cache._runs


def _log_to_row(log: RunLog) -> tuple[object, ...]:
    curve = tuple((p.iter, p.miou, p.aacc, p.macc) for p in log.curve)
    train = log.last_train.to_row() if log.last_train else None
    return (log.last_iter, log.max_iters, curve, log.starts, log.first_time, log.last_time,
            log.seconds_per_iter, tuple(log.warnings), train, log.fresh_start, log.torn, log.last_write, log.log_path,
            log.log_every, log.rejected, log.wall_s, log.formats_row(),
            tuple(start.to_row() for start in log.lineage))


def _log_from_row(row: tuple[Any, ...]) -> RunLog:
    (last_iter, max_iters, curve, starts, first_time, last_time, seconds_per_iter, warnings, train, fresh_start, torn,
     last_write, log_path, log_every, rejected, wall_s, (by_epoch, epoch, max_epochs, metric), lineage) = row
    if not (isinstance(curve, tuple) and isinstance(starts, int) and isinstance(warnings, tuple)
            and isinstance(torn, tuple) and (train is None or (isinstance(train, tuple) and len(train) == 6))):
        raise ValueError("bad run summary")
    return RunLog(last_iter, max_iters, tuple(ValPoint._make(point) for point in curve), starts, first_time, last_time,
                  seconds_per_iter, tuple(str(w) for w in warnings), TrainPoint(*train) if train else None,
                  bool(fresh_start), tuple(str(p) for p in torn), last_write, log_path, log_every,
                  tuple((str(name), str(why)) for name, why in rejected), wall_s, bool(by_epoch), epoch, max_epochs,
                  str(metric), tuple(_start_kind().from_row(start) for start in lineage) if lineage else ())

