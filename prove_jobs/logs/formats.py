"""What the log formats differ in, past parsing: where a val sits, how many iterations were planned.

* mmengine, iteration loop: a val's JSON ``step`` is its iteration (or an epoch count); its text line says
  none, the train or checkpoint line before it does (``assemble._build_start``).
* mmengine, epoch loop (``EpochBasedTrainLoop``): train lines count ``[e][i/n]`` (iteration i of n in epoch
  e), the JSON's ``iter`` is global; a val follows epoch e: iteration e x n. Planned: ``max_epochs`` (the
  config dump at the head of the text log) x n.
* mmcv 1.x (mmseg 0.x), ``<ts>.log`` and ``<ts>.log.json`` at the top of the work dir: a val's ``iter`` is,
  by mmcv version, the training iteration (before 1.3.4: its own train record was cleared and never
  written) or the val loader's length; from 1.3.4 to 1.3.11 the val's own train record was cleared too,
  from 1.3.12 on it is written just before the val. See :func:`legacy_vals`.
"""

from __future__ import annotations

from itertools import pairwise

from prove_jobs.logs.runlog import ValPoint

TYPE_CHECKING = False  # not typing's: see runlog.py
if TYPE_CHECKING:
    from collections.abc import Sequence

    from prove_jobs.logs.filestate import FileState


def planned_iters(json_state: FileState | None, text_state: FileState | None) -> int | None:
    """The iterations a start was to train, from its text log, else from its JSON (0.x: the config it holds)."""
    for state in (text_state, json_state):
        if state is not None and (planned := state.planned_iters()) is not None:
            return planned
    if json_state is not None and text_state is not None and json_state.by_epoch and text_state.per_epoch:
        return json_state.max_epochs * text_state.per_epoch if json_state.max_epochs else None
    return None


def per_epoch(json_state: FileState | None, text_state: FileState | None) -> int | None:
    return (text_state.per_epoch if text_state is not None else None) or (
        json_state.per_epoch if json_state is not None else None)


def epoch_iter(epoch: int | None, n: int | None) -> int | None:
    """The iteration a val after ``epoch`` sits at: the epoch's last (mmengine and mmcv validate after it)."""
    return epoch * n if epoch and n else None


def text_vals(state: FileState) -> list[ValPoint | None]:
    """A text log's vals (mmengine's lines name no iteration): after the train or checkpoint line before
    them, or at the end of their epoch."""
    return [ValPoint(at, miou, aacc, macc) if (at := epoch_iter(epoch, state.per_epoch) or mark) else None
            for _own, miou, aacc, macc, mark, _next, epoch in state.vals]


def with_text_memory(last: tuple[int, float | None, float | None, float | None, float | None, float | None] | None,
                     text_state: FileState | None) -> (
        tuple[int, float | None, float | None, float | None, float | None, float | None] | None):
    """The last train record, its memory from the text log where the JSON lacks it (older mmengine)."""
    if last is None or last[5] is not None or text_state is None or text_state.last_train is None:
        return last
    return (*last[:5], text_state.last_train[5])


def tail_step(tail: Sequence[tuple[int, float | None]]) -> int | None:
    """Iterations between train records: the smallest step between the last few (a val may hide one)."""
    return min((b - a for (a, _), (b, _) in pairwise(tail) if b > a), default=None)


def log_interval(state: FileState) -> int | None:
    """:func:`tail_step`, else the first train record's iteration (logged once: at its first interval)."""
    if (step := tail_step(state.tail)) is not None:
        return step
    first: tuple[int, str | None] | None = state.first_train
    return first[0] if first is not None and first[0] > 0 else None


def legacy_vals(state: FileState, max_iters: int | None, eval_interval: int | None) -> list[ValPoint | None]:
    """The vals of an mmseg 0.x log (its ``.log.json``, or its text log alone), each at its training iteration.

    A val's own ``iter`` is its iteration when it lies between the train records around it (mmcv before 1.3.4)
    and is not the same for every val (the val loader's length). Else the val ran at the first multiple of
    the eval interval (the config's ``evaluation = dict(interval=...)``) at or after the train record before it;
    without the config: one log interval after that record when the next one is two intervals on (its own
    train record was cleared: mmcv 1.3.4 to 1.3.11), else at that record; the last val, with no record after
    it, at the pace of the vals before it.
    """
    if state.by_epoch:
        return text_vals(state)
    step = log_interval(state)
    repeated = len(state.vals) >= 2 and len({v[0] for v in state.vals}) == 1
    points: list[ValPoint | None] = []
    every = eval_interval
    for own, miou, aacc, macc, before, after, _epoch in state.vals:
        if own and not repeated and (before is None or own > before) and (after is None or own <= after) and (
                max_iters is None or own <= max_iters):
            at = own
        elif before is None:
            at = None
        elif every:
            at = -(-before // every) * every
        elif after is not None:
            at = before + step if step and after - before >= 2 * step else before
        else:
            at = before + step if step and max_iters and before + step == max_iters else before
            paced = [p.iter for p in points if p is not None]
            if paced and all(i % paced[0] == 0 for i in paced):
                at = -(-before // paced[0]) * paced[0]
        points.append(ValPoint(at, miou, aacc, macc) if at else None)
    return points


def json_val_iter(own: int | None, epoch: int | None, n: int | None) -> int | None:
    """An mmengine JSON val's iteration bound: its epoch's end in an epoch loop (None: not known), else its step."""
    if epoch is not None:
        return epoch_iter(epoch, n)
    return own


def train_from(json_state: FileState | None, text_state: FileState | None, legacy: bool) -> FileState | None:
    """The file whose train records count: the JSON log, but a 0.x epoch loop's text log (its JSON counts
    iterations within the epoch, its text says how many an epoch has)."""
    if legacy and text_state is not None and (json_state is None or text_state.by_epoch):
        return text_state
    return json_state if json_state is not None else text_state


def done_iter(*states: FileState | None) -> int | None:
    """The iteration at the end of the latest epoch a start's logs saw end (a checkpoint, a val), if known."""
    got = [s for s in states if s is not None]
    n = next((s.per_epoch for s in got if s.per_epoch), None)
    ends = [s.epoch_done for s in got if s.by_epoch and s.epoch_done]
    return max(ends) * n if ends and n else None
