"""What a sweep would train: each run's recipe, as ``plan`` shows it and the report's first table reads.

Derived from the sweep spec alone (no run, no log): both the dashboard and the report use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

from prove_jobs.errors import SpecError
from prove_jobs.runs import Run
from prove_jobs.spec import Resources, Sweep, Variant


def plan_rows(sweep: Sweep, runs: Sequence[Run]) -> list[dict[str, object]]:
    """``plan --json``: each run's recipe, and the ``config_hash`` that identifies what it trains."""
    from prove_jobs.render import render_run

    rows = []
    for run in runs:
        v = sweep.recipe(run)
        rendered = render_run(sweep, run)
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
                "recipe": v.recipe,
                "optimizer": v.optimizer,
                "base_lr": v.lr,
                "lr_rule": v.lr_rule,
                "warmup_iters": v.warmup_iters,
                "scheduler": v.scheduler,
                "evaluation": sweep.evaluation.test_cfg(),
                "norm": norm_text(sweep, run),
                "val_interval": v.val_interval,
                "checkpoint_interval": v.checkpoint_interval,
                "resources": resources_json(sweep.resources_for(run)),
                "world_size": sweep.resources_for(run).world_size,
                "batch_per_gpu": v.batch_size // sweep.resources_for(run).world_size,
                # null and from_scratch: true when the run trains from scratch
                "pretrained": None if rendered.checkpoint is None else rendered.checkpoint.url or
                str(rendered.checkpoint.path),
                "from_scratch": rendered.from_scratch,
                "config_hash": rendered.config_hash,
            }
        )
    return rows


def resources_json(resources: Resources) -> dict[str, object]:
    """What a run's job asks for, after the per-variant and per-model overrides."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(resources).items()}


def resources_cells(resources: Resources, batch_size: int) -> list[str]:
    """Partition, GPUs, batch per process, CPUs, memory and time limit as the plan's table shows them
    ("-": the cluster's default)."""
    return [resources.partition or "-", resources.layout, batch_split(resources, batch_size),
            str(resources.cpus_per_task), "-" if resources.mem_gb is None else f"{resources.mem_gb:g} GB",
            time_limit(resources.timeout_min)]


def time_limit(minutes: int) -> str:
    """``30 min``, ``24 h``, ``1 h 30 min``: "0:30" and "48:00" read as minutes:seconds."""
    hours, rest = divmod(minutes, 60)
    return " ".join(part for part in (f"{hours} h" if hours else "", f"{rest} min" if rest or not hours else "")
                    if part)


def batch_split(resources: Resources, batch_size: int) -> str:
    """``16 = 2 x 8``: the total batch of a step, the processes (one per GPU), and what each loads."""
    if resources.world_size == 1:
        return str(batch_size)
    return f"{batch_size} = {resources.world_size} x {batch_size // resources.world_size}"


RESOURCE_HEADERS = ("Partition", "GPUs", "Batch", "CPUs", "Memory", "Time limit")


FROM_SCRATCH = "from scratch"
PER_MODEL = "per model"  # a model-zoo variant's cell: each model's numbers are in the recipes table


def configuration_rows(variants: Sequence[Variant]) -> list[tuple[str, list[str]]]:
    """The report's "Training Configurations" rows: (parameter, one cell per variant)."""
    parameters: list[tuple[str, Callable[[Variant], str]]] = [
        ("Iterations", lambda v: f"{v.max_iters:,}"),
        ("Batch size", lambda v: str(v.batch_size)),
        ("Total samples", lambda v: f"{v.total_samples:,}"),
        ("Gradient steps", lambda v: f"{v.gradient_steps:,}"),
        ("Crop size", lambda v: f"{v.crop_size[0]}×{v.crop_size[1]}"),
        ("Optimizer", lambda v: v.optimizer),
        ("Base LR", lr_text),
        ("Warmup", lambda v: f"{v.warmup_iters:,}"),
        ("LR scheduler", lambda v: v.scheduler),
        ("Val interval", lambda v: f"{v.val_interval:,}"),
        ("Checkpoint interval", lambda v: f"{v.checkpoint_interval:,}"),
    ]
    return [(label, [PER_MODEL if v.per_model else cell(v) for v in variants]) for label, cell in parameters]


def sweep_rows(sweep: Sweep, variants: Sequence[Variant], runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """What the sweep decides for every variant: the evaluation protocol, normalisation and initialisation."""
    rows = [("Evaluation", [sweep.evaluation.describe() for _ in variants])]
    starts = {run.model: init_text(sweep, run) for run in runs}  # a template read once per model, not per run

    def pretrained_or_not(sweep: Sweep, run: Run) -> str:
        return FROM_SCRATCH if starts[run.model] == FROM_SCRATCH else "pretrained (see Models)"

    for label, text in (("Normalisation", norm_text), ("Initialisation", pretrained_or_not)):
        cells = []
        for variant in variants:
            mine = [run for run in runs if run.variant == variant.name]
            seen = list(dict.fromkeys(text(sweep, run) for run in mine))
            cells.append(seen[0] if len(seen) == 1 else PER_MODEL if seen else "-")
        rows.append((label, cells))
    return rows


def norm_text(sweep: Sweep, run: Run) -> str:
    """``SyncBN (4 GPUs)`` when the run's BN layers normalise over all its GPUs, else ``BN``."""
    return f"SyncBN ({sweep.resources_for(run).layout})" if sweep.sync_bn(run) else "BN"


def init_text(sweep: Sweep, run: Run) -> str:
    """Where ``run``'s weights start: the checkpoint's file name, or ``from scratch``."""
    from prove_jobs.weights import render_model

    template = sweep.model_template(run.model)
    try:
        text = template.read_text()
    except OSError as exc:
        raise SpecError(template, None, f"cannot read model template ({exc.strerror})") from None
    model = render_model(template, text, sweep.weights_cache, sweep.pretrained)
    if model.from_scratch:
        return FROM_SCRATCH
    return "as its template writes it" if model.checkpoint is None else model.checkpoint.path.name


def model_rows(sweep: Sweep, runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """Per model: where it starts, and each model-zoo variant's recipe for it (the numbers that differ by model)."""
    header = ["Model", "Initialisation"]
    zoo_variants = [v for v in sweep.variants if v.per_model and any(r.variant == v.name for r in runs)]
    if zoo_variants:
        header += ["Recipe", "Iterations", "Batch", "Crop", "Optimizer", "Base LR", "Warmup", "LR scheduler"]
    rows = []
    for model in dict.fromkeys(run.model for run in runs):
        first = next(run for run in runs if run.model == model)
        start = init_text(sweep, first)
        if not zoo_variants:
            rows.append([model, start])
        for variant in zoo_variants:
            v = sweep.recipe(replace(first, variant=variant.name))
            zoo = sweep.facts(model).zoo
            batch = f"{v.batch_size} ({zoo.gpus}x{zoo.batch_per_gpu})" if zoo else str(v.batch_size)
            rows.append([model, start, variant.name, f"{v.max_iters:,}", batch,
                         f"{v.crop_size[0]}×{v.crop_size[1]}", v.optimizer, lr_text(v), f"{v.warmup_iters:,}",
                         v.scheduler])
    return header, rows


def lr_text(variant: Variant) -> str:
    """``0.08 (8× scaled)`` for a linearly scaled LR, as the report writes it."""
    if variant.lr_scale == 1.0:
        return f"{variant.lr:g}"
    return f"{variant.lr:g} ({variant.lr_scale:g}× scaled)"


def variant_label(variant: Variant) -> str:
    """``WEIGHTS_CITYSCAPES (20k, BS=16)``: the recipe in the column header; a model-zoo variant: ``(model zoo)``."""
    if variant.per_model:
        return f"{variant.name} (model zoo)"
    iters = f"{variant.max_iters // 1000}k" if variant.max_iters % 1000 == 0 else f"{variant.max_iters}"
    return f"{variant.name} ({iters}, BS={variant.batch_size})"
