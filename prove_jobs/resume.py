"""Resuming a run: which checkpoint, and loading it without letting it run code.

Imports torch and mmengine only inside its functions (the payload calls them where the job runs).
"""

from __future__ import annotations

from pathlib import Path

from prove_jobs.errors import RunError

LAST_CHECKPOINT = "last_checkpoint"


def resume_point(work_dir: Path) -> Path | None:
    """The checkpoint to resume from: the one ``last_checkpoint`` names; ``None`` to start afresh.

    mmengine rewrites ``last_checkpoint`` only once the checkpoint it names is fully written. No
    pointer: no checkpoint is known whole (a job killed while saving its first one leaves a
    truncated ``iter_N.pth``), so the training starts over. A pointer cut short (a kill while
    it was rewritten) follows a complete save: the newest numbered checkpoint is that one.
    """
    text = read_pointer(work_dir)
    if text is None:
        return None
    named = Path(text)
    if named.name and named.is_file():
        return named
    numbered = [(int(p.stem[5:]), p) for p in work_dir.glob("iter_*.pth") if p.stem[5:].isdigit()]
    return max(numbered)[1] if numbered else None


def read_pointer(work_dir: Path) -> str | None:
    """What ``last_checkpoint`` says (stripped), ``None`` when there is none or it cannot be read (as if missing).

    A FIFO, a device or a link there is :class:`~prove_jobs.safe_read.NotReadable` (one line naming it):
    mmengine writes a plain file of one path, and a planted FIFO must not hang a ``submit`` or a job.
    """
    from prove_jobs.safe_read import MAX_POINTER_BYTES, read_tail

    try:
        data, _ = read_tail(work_dir / LAST_CHECKPOINT, MAX_POINTER_BYTES, below=work_dir)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace").strip()


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (the default since torch 2.6) read mmengine's checkpoints.

    mmengine 0.10.7 resumes with a plain ``torch.load``; its checkpoints pickle the message hub's
    log history: HistoryBuffer objects holding numpy arrays and scalars, and a dict of its
    statistics methods, pickled as ``getattr(HistoryBuffer, 'min')``. We allow exactly those globals
    (found by resuming real checkpoints until no "Unsupported global" was left) rather than
    turning the check off for every load (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD). Not ``getattr``
    itself: with it a crafted checkpoint walks from any allowed class to its module's globals and
    to ``builtins`` (a group member can drop one in a run a colleague will resume); the
    checkpoint's ``builtins.getattr`` is :func:`_history_buffer_getattr`, which fetches only those methods.
    """
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]

    torch.serialization.add_safe_globals(
        [HistoryBuffer, (_history_buffer_getattr, "builtins.getattr"), np.ndarray, np.dtype, multiarray._reconstruct,
         multiarray.scalar]
        # numpy >= 1.25 builds each dtype as its own class; float64 and int64 are in every
        # mid-run checkpoint, float32 and int32 are harmless insurance.
        + [type(np.dtype(code)) for code in ("f8", "i8", "f4", "i4")]
    )


def _history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` as a checkpoint may call it: HistoryBuffer's statistics methods, nothing else."""
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = {"min", "max", "mean", "current", *HistoryBuffer._statistics_methods}
    if obj is not HistoryBuffer or name not in allowed:
        raise RuntimeError(f"refused getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}): a checkpoint "
                           "may fetch only HistoryBuffer's statistics methods")
    return getattr(HistoryBuffer, name)


def check_checkpoint(path: Path) -> None:
    """Load ``path`` as resuming will (weights only, the allow-list above), before any training starts.

    Memory-mapped: the tensors are not read. A checkpoint that asks for anything else (a crafted
    pickle, another tool's checkpoint) is refused in one line naming it; the run does not start.
    """
    import torch

    try:
        torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ValueError... for a bad file
        reason = " ".join(str(exc).split())
        cut = reason.find(" Check the documentation")  # torch's long advice on weights_only
        raise RunError(f"{path}: refused as a checkpoint to resume from ({reason[:cut] if cut > 0 else reason})"[:400]
                       ) from None
