"""What the logs say about a run (:class:`RunLog`), and the sizes that choose how files are read.

The plain data that a warm ``status`` needs, apart from the parsers: a status whose runs did not
change loads this and never the parsing modules.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

    from prove_jobs.logs.lineage import Start

TAIL = 5  # seconds_per_iter: the mean of the last 5 train records' `time`


@dataclass
class Limits:
    """File sizes that choose how a file is read (a test lowers them to take the sparse paths on small files)."""

    sparse_min_bytes: int = 1 << 16  # below this a line-by-line parse costs nothing
    window_bytes: int = 4 << 20  # a log is read this much at a time (memory stays bounded); a longer line is skipped
    prefetch_min_runs_per_worker: int = 32  # fewer unseen runs than this per worker: not worth a fork


LIMITS = Limits()


if TYPE_CHECKING:

    class ValPoint(NamedTuple):
        """One validation: the training iteration and its metrics (a tuple: 40,000 of them load in ms)."""

        iter: int
        miou: float | None  # percent
        aacc: float | None  # percent
        macc: float | None  # percent

else:  # the same tuple without importing typing at start-up
    ValPoint = collections.namedtuple("ValPoint", "iter miou aacc macc")


@dataclass(frozen=True)
class TrainPoint:
    """The last train record: where the training is and how it goes."""

    iter: int
    time: float | None  # seconds per iteration
    data_time: float | None  # of which waiting for data
    loss: float | None
    lr: float | None
    memory_mb: float | None  # peak GPU memory allocated (mmengine's `memory`; none on CPU)

    def to_row(self) -> tuple[object, ...]:
        return (self.iter, self.time, self.data_time, self.loss, self.lr, self.memory_mb)


@dataclass(frozen=True)
class RunLog:
    """Everything the logs of a run dir say: position, curve, speed, times, warnings."""

    last_iter: int | None
    max_iters: int | None
    curve: tuple[ValPoint, ...]
    starts: int
    first_time: float | None
    last_time: float | None
    seconds_per_iter: float | None
    warnings: tuple[str, ...]
    last_train: TrainPoint | None = None
    fresh_start: bool = False  # the newest start has logged no train record yet (building, loading data)
    torn: tuple[str, ...] = ()  # files of the newest start whose last line is cut off
    # Where and when, not what: two copies of one run's logs say the same (compare=False).
    last_write: float | None = field(default=None, compare=False)  # the newest start's files' mtime
    log_path: str | None = field(default=None, compare=False)  # the newest start's text log (else its JSON)
    log_every: int | None = None  # iterations between the last two train records: the log's pace
    # (field, why and in which file): values left out of the records, out of their type or range (records.LOG_FIELDS)
    rejected: tuple[tuple[str, str], ...] = ()
    # Wall time of the starts that produced the result, each from its first training record to its last training line
    # (docs/status.md, "Time"): status's Elapsed and the report's wall time
    wall_s: float | None = None
    # The log formats (logs/formats.py): an epoch loop's epochs, and which metric the curve's `miou` holds
    by_epoch: bool = False  # an epoch-based loop (EpochBasedTrainLoop, mmcv's EpochBasedRunner)
    epoch: int | None = None  # the latest epoch its logs name
    max_epochs: int | None = None  # from the config dump at the head of its text log
    metric: str = "mIoU"  # mIoU, else mDice or mFscore where the run has that and no mIoU

    def formats_row(self) -> tuple[object, ...]:
        return (self.by_epoch, self.epoch, self.max_epochs, self.metric)
    # The run's starts as a lineage (lineage.py): how each began, its iterations, its wall time, whether it counts
    lineage: tuple[Start, ...] = ()

    def rejected_notes(self, shown: dict[str, object]) -> dict[str, str]:
        """``<key>_note`` for each key of ``status --json`` (``shown``) that is null because the log value it shows
        was left out (out of its type or range): why, and in which file."""
        rejected = dict(self.rejected)
        return {f"{key}_note": rejected[name] for key, name in _SHOWN
                if shown.get(key) is None and name in rejected}


# The keys of `status --json` that show a log record's field, and the field.
_SHOWN = (("iter", "iter"), ("last_miou", "miou"), ("last_aacc", "aacc"), ("best_miou", "miou"),
          ("sec_per_iter", "time"), ("data_time", "data_time"), ("memory_mb", "memory"), ("loss", "loss"),
          ("lr", "lr"), ("max_iters", "max_iters"))


EMPTY = RunLog(None, None, (), 0, None, None, None, ())
