"""Before a submission writes anything: what would make every job fail, or write where it must not.

Each check raises one line naming the file and the field (or the link, the folder); ``submit``
calls them all before the first claim is written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from prove_jobs import jobdir
from prove_jobs.errors import ProveJobsError, RunError, SpecError, TrainingStackMissing
from prove_jobs.executors import SIGNAL_DELAY_S, SIGNAL_JITTER_S
from prove_jobs.fsafe import check_below
from prove_jobs.identity import current_user
from prove_jobs.runs import CONFIG_DIR, CONFIG_FILE, CONFLICTS_FILE, META_FILE, META_MUTEX, MODEL_FILE, TRAIN_LOCK, Run
from prove_jobs.spec import Resources, Sweep

# typing.TYPE_CHECKING would import typing (milliseconds of every start); mypy reads this the same
TYPE_CHECKING = False
if TYPE_CHECKING:
    from prove_jobs.render import RenderedRun
    from prove_jobs.weight_cache import Fetched, Progress


DATASET_FOLDERS = {"cityscapes": ("leftImg8bit", "gtFine")}


def refuse_multi_process_local(sweep: Sweep, runs: Sequence[Run]) -> None:
    """A run of several processes (nodes x GPUs) is a SLURM job: the local executor starts one process per run."""
    for run in runs:
        resources = sweep.resources_for(run)
        if resources.world_size > 1:
            raise ProveJobsError(f"{sweep.path}: {run.name} trains on {resources.world_size} processes "
                                 f"({resources.layout}): multi-GPU runs need SLURM (--executor slurm)")


def check_planted_links(sweep: Sweep, runs: Sequence[Run]) -> None:
    """Refuse a submission (nothing written yet) where someone else's link sits where it would write."""
    # prove/job.out and job.err are links by design (made by whoever submitted last): they are
    # replaced by a rename, never followed, so only the folder they sit in is checked.
    in_run = [META_FILE, META_MUTEX, TRAIN_LOCK, CONFLICTS_FILE, *(f"{CONFIG_DIR}/{name}" for name in (CONFIG_FILE,
                                                                                                  MODEL_FILE))]
    check_below(sweep.data_root, [run.run_dir / name for run in runs for name in in_run])
    jobdir.check_job_folder(sweep.data_root)


def check_dataset_root(sweep: Sweep) -> None:
    """The dataset is where the sweep says, with the folders its loader reads (one line naming the field)."""
    root = sweep.dataset_root
    needed = DATASET_FOLDERS.get(sweep.dataset, ())
    missing = [name for name in needed if not (root / name).is_dir()]
    if not root.is_dir() or missing:
        what = "does not exist" if not root.is_dir() else f"has no {', '.join(f'{m}/' for m in missing)}"
        raise SpecError(sweep.path, "dataset_root", f"{root} {what}: point dataset_root at the {sweep.dataset} dataset "
                        "(it holds leftImg8bit/ and gtFine/; `prove-jobs demo-data DIR` writes a small one)")


def check_training_stack(resources: Sequence[Resources]) -> None:
    """A local job trains in this Python: it needs torch, mmengine and mmsegmentation (the train extra)."""
    if any(r.python for r in resources):
        return  # another interpreter trains: its environment is its own
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a broken install, or a finder that refuses it
            return True

    missing = [name for name in ("torch", "mmengine", "mmseg") if absent(name)]
    if missing:
        raise TrainingStackMissing(
            f"a local job trains in this Python ({sys.executable}), which lacks {', '.join(missing)}: install the "
            "train extra (pip install torch==<build> 'prove-jobs[train]', docs/install.md), or submit to SLURM")


def check_data_root(root: Path) -> None:
    if not root.is_dir():
        raise RunError(f"{root}: data root does not exist (create it, or pass --data-root)")
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunError(f"{root}: data root is not writable by {current_user()}")


def short_limit_warning(resources: Resources, items: Sequence[RenderedRun]) -> str:
    return (f"timeout_min = {resources.timeout_min} ({', '.join(i.run.name for i in items)}): SLURM sends the "
            f"checkpoint signal {SIGNAL_DELAY_S} s before the limit, up to {SIGNAL_JITTER_S} s earlier; these jobs "
            "would be stopped and requeued almost at once, until max_requeues. Give them at least 4 minutes.")


def ready_weights(sweep: Sweep, rendered: Sequence[RenderedRun], *, dry_run: bool = False,
                  progress: Progress | None = None) -> list[Fetched]:
    """Each distinct checkpoint of ``rendered`` in the weight cache, verified: fetched here (the login node)
    when missing, so that no job downloads; a dry run only looks. One line naming the URL when it cannot."""
    from prove_jobs.weight_cache import fetch

    return fetch([(item.run.model, item.checkpoint) for item in rendered], umask=sweep.sharing.umask_bits,
                 sweep_file=sweep.path, dry_run=dry_run, progress=progress)


def fetch_weights(sweep: Sweep, runs: Sequence[Run], *, dry_run: bool = False,
                  progress: Progress | None = None) -> list[Fetched]:
    """``prove-jobs weights``: the checkpoints of ``runs``, fetched ahead of time (or, on a dry run, listed)."""
    from prove_jobs.render import render_run

    return ready_weights(sweep, [render_run(sweep, run) for run in runs], dry_run=dry_run, progress=progress)


def job_weights(item: RenderedRun, fetched: Sequence[Fetched]) -> tuple[tuple[str, str], ...]:
    """The (path, sha256) a run's job checks before it loads its checkpoint."""
    if item.checkpoint is None:
        return ()
    return tuple((str(f.checkpoint.path), f.sha256) for f in fetched if f.checkpoint == item.checkpoint and f.sha256)
