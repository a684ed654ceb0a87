"""Read where an mmsegmentation/mmengine training run stands from the logs in its work dir.

Stdlib only: this runs on login nodes without torch, mmengine or mmseg.

What mmengine 0.10 writes per training start, under ``<work_dir>/<YYYYMMDD_HHMMSS>/``:

* ``vis_data/scalars.json`` (and an identical ``vis_data/<ts>.json``): JSON lines. Train records
  carry ``iter``/``step`` (the training iteration), ``lr``, ``loss``, ``time``, ``data_time``...;
  val records carry ``aAcc``/``mIoU``/``mAcc`` (percent) and ``step``, which is the training
  iteration only with ``LoggerHook(log_metric_by_epoch=False)``, else the epoch count (0 with an
  InfiniteSampler).
* ``<ts>.log``: the text log, ``%Y/%m/%d %H:%M:%S - mmengine - INFO - Iter(train) [ 2500/20000]  ...``.
  The val line does not carry the training iteration.
* ``<ts>.json`` outside vis_data: written by ``Runner.test()``, never read here.

mmseg 0.x wrote ``<work_dir>/*.log.json`` (``"mode": "train"/"val"``, metrics as fractions).

The package, one step each: ``records`` parses lines, ``sparse`` finds the few lines that
matter in a big file, ``filestate`` keeps where each file was read to, ``assemble`` puts a
run's starts together, ``cache`` keeps it all across calls; ``times`` reads how long a run
trained (every train record, JSON or text). The logger ``prove_jobs.logs``
says at DEBUG which file was read, from where, and how (``prove-jobs -vv``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from prove_jobs.logs.cache import LogCache, default_cache_path
from prove_jobs.logs.runlog import LIMITS, Limits, RunLog, ValPoint

TYPE_CHECKING = False  # not typing's: see runlog.py
if TYPE_CHECKING:
    from typing import Any

    from prove_jobs.logs.filestate import FileState
    from prove_jobs.logs.records import Chunk, Record, parse_json_chunk, parse_text_chunk
    from prove_jobs.logs.times import TrainingTime

# The parsers load on first use: a status whose runs did not change never needs them.
_PARSING = {"Chunk", "Record", "parse_json_chunk", "parse_text_chunk"}


def __getattr__(name: str) -> Any:
    if name in _PARSING:
        from prove_jobs.logs import records

        return getattr(records, name)
    if name == "TrainingTime":  # as the parsers: a status never times a run
        from prove_jobs.logs import times

        return times.TrainingTime
    raise AttributeError(f"module 'prove_jobs.logs' has no attribute {name!r}")

__all__ = [
    "LIMITS",
    "Chunk",
    "Limits",
    "LogCache",
    "Record",
    "RunLog",
    "TrainingTime",
    "ValPoint",
    "default_cache_path",
    "parse_json_chunk",
    "parse_text_chunk",
    "read_run_log",
    "read_run_log_full",
    "read_text_log",
    "read_text_log_full",
    "training_time",
]


def read_run_log(work_dir: Path, entries: Sequence[os.DirEntry[str]] | None = None) -> RunLog:
    """Everything the logs under ``work_dir`` say about the run; never raises for bad or missing files."""
    from prove_jobs.logs.assemble import read_run_log_with

    return read_run_log_with(Path(work_dir), _fresh, entries=entries)


def read_text_log(path: Path) -> RunLog:
    """The same from one text log, e.g. a job's stdout (console format: no year, ANSI colours)."""
    from prove_jobs.logs.assemble import read_text_log_with

    return read_text_log_with(Path(path), _fresh)


def training_time(work_dir: Path, entries: Sequence[os.DirEntry[str]] | None = None) -> TrainingTime:
    """How long the run in ``work_dir`` trained, and to reach each val, from its JSON or text logs (read afresh)."""
    from prove_jobs.logs.times import training_time as read

    return read(Path(work_dir), entries)


def read_run_log_full(work_dir: Path) -> RunLog:
    """:func:`read_run_log` parsing every line of every file (the reference the sparse reader must equal)."""
    from prove_jobs.logs.assemble import read_run_log_with

    return read_run_log_with(Path(work_dir), _fresh_full, sparse=False)


def read_text_log_full(path: Path) -> RunLog:
    """:func:`read_text_log` parsing every line (the reference for the sparse text reader)."""
    from prove_jobs.logs.assemble import read_text_log_with

    return read_text_log_with(Path(path), _fresh_full)


def _fresh(path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None) -> FileState | None:
    from prove_jobs.logs.filestate import uncached

    return uncached(path, kind, warnings, st)


def _fresh_full(path: Path | str, kind: str, warnings: list[str], st: os.stat_result | None = None) -> FileState | None:
    from prove_jobs.logs.filestate import uncached_full

    return uncached_full(path, kind, warnings, st)
