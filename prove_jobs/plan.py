"""What a sweep would train: each run's recipe, as ``plan`` shows it and the report's first table reads.

Derived from the sweep spec alone (no run, no log): both the dashboard and the report use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

from prove_jobs.runs import Run
from prove_jobs.spec import OPTIMIZER, SCHEDULER, Resources, Sweep, Variant


def plan_rows(sweep: Sweep, runs: Sequence[Run]) -> list[dict[str, object]]:
    """``plan --json``: each run's recipe, and the ``config_hash`` that identifies what it trains."""
    from prove_jobs.render import render_run

    rows = []
    for run in runs:
        v = sweep.variant(run.variant)
        rows.append(
            {
                "model": run.model,
                "variant": run.variant,
                "seed": sweep.training_seed(run),
                "run_dir": str(run.run_dir),
                "max_iters": v.max_iters,
                "batch_size": v.batch_size,
                "total_samples": v.total_samples,
                "gradient_steps": v.gradient_steps,
                "crop_size": list(v.crop_size),
                "optimizer": OPTIMIZER,
                "base_lr": v.lr,
                "lr_rule": v.lr_rule,
                "warmup_iters": v.warmup_iters,
                "scheduler": SCHEDULER,
                "val_interval": v.val_interval,
                "checkpoint_interval": v.checkpoint_interval,
                "resources": resources_json(sweep.resources_for(run)),
                "world_size": sweep.resources_for(run).world_size,
                "batch_per_gpu": v.batch_size // sweep.resources_for(run).world_size,
                "config_hash": render_run(sweep, run).config_hash,
            }
        )
    return rows


def resources_json(resources: Resources) -> dict[str, object]:
    """What a run's job asks for, after the per-variant and per-model overrides."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(resources).items()}


def resources_cells(resources: Resources, batch_size: int) -> list[str]:
    """Partition, GPUs, batch per process, CPUs, memory and time limit as the plan's table shows them
    ("-": the cluster's default)."""
    hours, minutes = divmod(resources.timeout_min, 60)
    return [resources.partition or "-", resources.layout, batch_split(resources, batch_size),
            str(resources.cpus_per_task), "-" if resources.mem_gb is None else f"{resources.mem_gb:g} GB",
            f"{hours}:{minutes:02d}"]


def batch_split(resources: Resources, batch_size: int) -> str:
    """``16 = 2 x 8``: the total batch of a step, the processes (one per GPU), and what each loads."""
    if resources.world_size == 1:
        return str(batch_size)
    return f"{batch_size} = {resources.world_size} x {batch_size // resources.world_size}"


RESOURCE_HEADERS = ("Partition", "GPUs", "Batch", "CPUs", "Memory", "Time limit")


def configuration_rows(variants: Sequence[Variant]) -> list[tuple[str, list[str]]]:
    """The report's "Training Configurations" rows: (parameter, one cell per variant)."""
    parameters: list[tuple[str, Callable[[Variant], str]]] = [
        ("Iterations", lambda v: f"{v.max_iters:,}"),
        ("Batch size", lambda v: str(v.batch_size)),
        ("Total samples", lambda v: f"{v.total_samples:,}"),
        ("Gradient steps", lambda v: f"{v.gradient_steps:,}"),
        ("Crop size", lambda v: f"{v.crop_size[0]}×{v.crop_size[1]}"),
        ("Optimizer", lambda v: OPTIMIZER),
        ("Base LR", lr_text),
        ("Warmup", lambda v: f"{v.warmup_iters:,}"),
        ("LR scheduler", lambda v: SCHEDULER),
        ("Val interval", lambda v: f"{v.val_interval:,}"),
        ("Checkpoint interval", lambda v: f"{v.checkpoint_interval:,}"),
    ]
    return [(label, [cell(v) for v in variants]) for label, cell in parameters]


def lr_text(variant: Variant) -> str:
    """``0.08 (8× scaled)`` for a linearly scaled LR, as the report writes it."""
    if variant.lr_scale == 1.0:
        return f"{variant.lr:g}"
    return f"{variant.lr:g} ({variant.lr_scale:g}× scaled)"


def variant_label(variant: Variant) -> str:
    """``WEIGHTS_CITYSCAPES (20k, BS=16)``: the recipe in the column header."""
    iters = f"{variant.max_iters // 1000}k" if variant.max_iters % 1000 == 0 else f"{variant.max_iters}"
    return f"{variant.name} ({iters}, BS={variant.batch_size})"
