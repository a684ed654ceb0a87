"""A variant: one training recipe (schedule, batch, learning rate), one TOML file under ``variants/``."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError
from prove_jobs.spec.fields import as_str, crop, find_template, refuse_unknown
from prove_jobs.spec.model import ZooRecipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VARIANT_KEYS = {
    "description", "recipe", "max_iters", "batch_size", "lr", "lr_scaling", "warmup_iters",
    "val_interval", "checkpoint_interval", "crop_size",
}
UNIFIED, MODEL_ZOO = "unified", "model_zoo"
RECIPES = (UNIFIED, MODEL_ZOO)
ZOO_KEYS = {"description", "recipe", "batch_size"}
# What job_templates/run_config.py.tmpl (the unified recipe) sets; a model-zoo variant keeps each model's own.
UNIFIED_OPTIMIZER = "SGD"
UNIFIED_SCHEDULER = "Poly"


@dataclass(frozen=True)
class Variant:
    """A training recipe: schedule, batch size and learning rate.

    ``recipe``: ``unified`` (job_templates/run_config.py.tmpl: one SGD recipe for every model, these
    numbers) or ``model_zoo`` (each model as mmseg published it: optimizer, schedule, iterations, batch
    and crop from the model's ``prove_zoo``). A model-zoo variant's numbers differ per model:
    ``Sweep.recipe(run)`` gives them; the variant itself holds none (``per_model``).
    """

    name: str
    max_iters: int
    batch_size: int
    lr: float
    warmup_iters: int
    val_interval: int
    checkpoint_interval: int
    crop_size: tuple[int, int]
    lr_rule: str
    lr_scale: float = 1.0  # lr / base_lr when scaled from a reference recipe
    description: str = ""
    source: Path | None = None
    recipe: str = UNIFIED
    optimizer: str = UNIFIED_OPTIMIZER
    scheduler: str = UNIFIED_SCHEDULER
    # the model-zoo variant's total batch when it is not the zoo's (the LR then scales linearly from the zoo's)
    zoo_batch_size: int | None = None

    @property
    def per_model(self) -> bool:
        """A model-zoo variant: iterations, batch, LR... are each model's (``Sweep.recipe``)."""
        return self.recipe == MODEL_ZOO

    @property
    def total_samples(self) -> int:
        return self.max_iters * self.batch_size

    @property
    def gradient_steps(self) -> int:
        return self.max_iters


def load_variant(templates_dirs: Sequence[Path], name: str, sweep_path: Path,
                 crop_default: tuple[int, int] = (512, 512)) -> Variant:
    """Read and check ``<templates>/variants/<name>.toml`` (the first of ``templates_dirs`` that has it); errors
    name that file and the field."""
    vpath = find_template(templates_dirs, f"variants/{name}.toml")
    if not vpath.is_file():
        known = ", ".join(sorted({p.stem for d in templates_dirs for p in (d / "variants").glob("*.toml")}))
        raise SpecError(sweep_path, "variants", f"unknown variant {name!r} (known: {known})")
    try:
        raw = tomllib.loads(vpath.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(vpath, None, f"not valid TOML ({exc})") from None
    refuse_unknown(vpath, "", raw, VARIANT_KEYS)
    recipe = raw.get("recipe", UNIFIED)
    if recipe not in RECIPES:
        raise SpecError(vpath, "recipe", f"must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if recipe == MODEL_ZOO:
        return _model_zoo(vpath, name, raw)

    def positive(key: str, default: int | None = None) -> int:
        value = raw.get(key, default)
        if value is None:
            raise SpecError(vpath, key, "missing (required)")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SpecError(vpath, key, f"must be a positive integer, got {value!r}")
        return value

    max_iters = positive("max_iters")
    batch_size = positive("batch_size")
    val_interval = positive("val_interval")
    warmup = raw.get("warmup_iters", 0)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or not 0 <= warmup < max_iters:
        raise SpecError(vpath, "warmup_iters", f"must be an integer in [0, max_iters), got {warmup!r}")
    lr, rule, scale = _learning_rate(vpath, raw, batch_size)
    crop_size = crop(vpath, "crop_size", raw["crop_size"]) if "crop_size" in raw else crop_default
    checkpoint_interval = positive("checkpoint_interval", val_interval)
    for key, every in (("val_interval", val_interval), ("checkpoint_interval", checkpoint_interval)):
        if every > max_iters:
            never = "validate" if key == "val_interval" else "save a checkpoint"
            raise SpecError(vpath, key, f"{every} is more than max_iters ({max_iters}): the run would never {never}")
    return Variant(
        name=name,
        max_iters=max_iters,
        batch_size=batch_size,
        lr=lr,
        warmup_iters=warmup,
        val_interval=val_interval,
        checkpoint_interval=checkpoint_interval,
        crop_size=crop_size,
        lr_rule=rule,
        lr_scale=scale,
        description=as_str(vpath, "description", raw.get("description", "")),
        source=vpath,
    )


def _model_zoo(vpath: Path, name: str, raw: Mapping[str, Any]) -> Variant:
    """A model-zoo variant: only its description and, optionally, a total batch other than the zoo's."""
    extra = sorted(set(raw) - ZOO_KEYS)
    if extra:
        raise SpecError(vpath, extra[0], "a model_zoo variant trains each model's own schedule, crop and optimizer: "
                        f"only {', '.join(sorted(ZOO_KEYS))} can be set")
    batch = raw.get("batch_size")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0):
        raise SpecError(vpath, "batch_size", f"must be a positive integer (the total batch), got {batch!r}")
    return Variant(name=name, max_iters=0, batch_size=0, lr=0.0, warmup_iters=0, val_interval=0,
                   checkpoint_interval=0, crop_size=(0, 0), lr_rule="model zoo",
                   description=as_str(vpath, "description", raw.get("description", "")), source=vpath,
                   recipe=MODEL_ZOO, optimizer="per model", scheduler="per model", zoo_batch_size=batch)


def zoo_recipe(variant: Variant, zoo: ZooRecipe) -> Variant:
    """``variant`` (a model-zoo one) with one model's published numbers; the LR scaled linearly from the batch
    the zoo tuned it for (``auto_scale_lr.base_batch_size``, else GPUs x images) when the total batch differs."""
    batch = variant.zoo_batch_size or zoo.batch_size
    factor = batch / zoo.base_batch_size
    lr = round(zoo.lr * factor, 12)
    rule = "model zoo" if factor == 1 else \
        f"linear: {zoo.lr:g} x {factor:g} (batch {batch} / the zoo's {zoo.base_batch_size})"
    return replace(variant, max_iters=zoo.max_iters, batch_size=batch, lr=lr, warmup_iters=zoo.warmup_iters,
                   val_interval=zoo.val_interval, checkpoint_interval=zoo.val_interval, crop_size=zoo.crop_size,
                   lr_rule=rule, lr_scale=factor, optimizer=zoo.optimizer, scheduler=zoo.scheduler)


def _learning_rate(vpath: Path, raw: Mapping[str, Any], batch_size: int) -> tuple[float, str, float]:
    """The LR given directly, or scaled linearly (Goyal et al. 2017) from a reference recipe."""
    if ("lr" in raw) == ("lr_scaling" in raw):
        raise SpecError(vpath, "lr", "give exactly one of 'lr' or 'lr_scaling'")
    if "lr" in raw:
        lr = raw["lr"]
        if not isinstance(lr, int | float) or isinstance(lr, bool) or lr <= 0:
            raise SpecError(vpath, "lr", f"must be a positive number, got {lr!r}")
        return float(lr), "given", 1.0
    scaling = raw["lr_scaling"]
    if not isinstance(scaling, dict):
        raise SpecError(vpath, "lr_scaling", "must be a table with base_lr and base_batch_size")
    refuse_unknown(vpath, "lr_scaling.", scaling, {"rule", "base_lr", "base_batch_size"})
    if scaling.get("rule", "linear") != "linear":
        raise SpecError(vpath, "lr_scaling.rule", f"only 'linear' is supported, got {scaling.get('rule')!r}")
    base_lr = scaling.get("base_lr")
    base_bs = scaling.get("base_batch_size")
    if not isinstance(base_lr, int | float) or isinstance(base_lr, bool) or base_lr <= 0:
        raise SpecError(vpath, "lr_scaling.base_lr", f"must be a positive number, got {base_lr!r}")
    if not isinstance(base_bs, int) or isinstance(base_bs, bool) or base_bs <= 0:
        raise SpecError(vpath, "lr_scaling.base_batch_size", f"must be a positive integer, got {base_bs!r}")
    # Rounded so that 0.01 * 16 / 2 prints as 0.08, not 0.08000000000000002.
    lr = round(float(base_lr) * batch_size / base_bs, 12)
    factor = batch_size / base_bs
    return lr, f"linear: {base_lr} x {factor:g} (batch {batch_size} / {base_bs})", factor
