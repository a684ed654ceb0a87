"""What several commands share: the runs a command line names, lock conflicts, checkpoints fetched."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

TYPE_CHECKING = False  # not typing's: see parser.py
if TYPE_CHECKING:
    from prove_jobs.claims import LockHolder
    from prove_jobs.run_filter import RunFilter
    from prove_jobs.runs import Run
    from prove_jobs.spec import Sweep
    from prove_jobs.status_source import StatusSource
    from prove_jobs.terminal import Terminal
    from prove_jobs.weight_cache import Fetched


def run_filter(args: argparse.Namespace) -> RunFilter:
    """``--model``, ``--variant``, ``--seed``."""
    from prove_jobs.run_filter import RunFilter

    return RunFilter.of(args.model, args.variant, args.seed)


def sweep_and_runs(args: argparse.Namespace, term: Terminal | None = None) -> tuple[Sweep, list[Run]]:
    """The sweep and the runs asked for; with ``term``, a preview: an unset ``${VAR}`` is shown, not refused."""
    from prove_jobs.spec import load_sweep

    sweep = load_sweep(args.sweep, data_root=args.data_root, preview=term is not None)
    if term is not None and sweep.unset:
        names = ", ".join(sweep.unset)
        term.warn(f"{names} not set: paths are shown as ${{{sweep.unset[0]}}}/...; export {sweep.unset[0]}=/path "
                  "(or pass --data-root DIR) before you submit")
    return sweep, sweep.select(run_filter(args))


def report_conflicts(conflicts: Sequence[tuple[Run, LockHolder]], term: Terminal) -> None:
    for run, holder in conflicts:
        term.warn(f"lock conflict: {run.name} is held by {holder.describe()}; not submitted")
    if conflicts:
        term.info("`prove-jobs resubmit SWEEP --lock-conflicts [--wait]` submits them once their holder is gone")


def weight_line(fetched: Fetched) -> str:
    """``https://.../mit_b3_20220624-13b1141c.pth -> /cache/mit_b3_20220624-13b1141c.pth (170.9 MB, fetched;
    segformer_mit-b3)``."""
    models = ", ".join(fetched.models)
    if fetched.checkpoint is None:
        return f"from scratch: {models}"
    from prove_jobs.terminal import byte_size

    size = "" if fetched.size is None else f"{byte_size(fetched.size)}, "
    source = fetched.checkpoint.url or fetched.checkpoint.source
    return f"{source} -> {fetched.checkpoint.path} ({size}{fetched.state}; {models})"


def close(source: StatusSource, term: Terminal) -> None:
    warning = source.close()
    if warning:
        term.warn(warning)
