"""Sweep files: which models, which variants (training recipes), where, on what resources.

A sweep file is TOML; a variant is one TOML file under ``<templates>/variants/``; a model
is one mmengine config under ``<templates>/models/``. Everything is validated here, once,
so that later stages can trust a ``Sweep``. See docs/sweep-file.md for the format.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError
from prove_jobs.runs import Run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCK_MODES = ("fcntl", "soft")
OPTIMIZER = "SGD"  # what job_templates/run_config.py.tmpl sets; shown by `plan`
SCHEDULER = "Poly"


def default_templates_dir() -> Path:
    """``job_templates/`` beside the package (editable install) or inside it (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "job_templates", here / "job_templates"):
        if (candidate / "models").is_dir():
            return candidate
    raise SpecError(here, None, "job_templates/ not found next to the prove_jobs package; reinstall it")


@dataclass(frozen=True)
class Variant:
    """A training recipe: schedule, batch size and learning rate."""

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

    @property
    def total_samples(self) -> int:
        return self.max_iters * self.batch_size

    @property
    def gradient_steps(self) -> int:
        return self.max_iters


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for. ``None`` leaves the cluster's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 4
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    constraint: str | None = None
    max_requeues: int = 3
    extra_sbatch: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    # The Python the job runs (a command line, used as it is): the training environment's, when it is
    # not the one running prove-jobs (a lite login node submitting to full-flavour nodes). Default: this one.
    python: str | None = None


@dataclass(frozen=True)
class Training:
    """Settings shared by every run of a sweep that are not part of a variant's recipe."""

    log_interval: int = 50
    num_workers: int = 2
    seed: int = 0


@dataclass(frozen=True)
class Sharing:
    """How a data root shared by several users is written (docs/locks.md)."""

    # "fcntl": OS locks through filelock.FileLock (local disks, NFSv4, Lustre mounted with flock);
    # "soft": filelock.SoftFileLock marker files, for filesystems where fcntl locks do not work.
    lock_mode: str = "fcntl"
    # Applied to everything prove-jobs and the training write in a run dir: "0002" keeps files
    # group-writable, so that a colleague can take over a run (mmengine rewrites last_checkpoint).
    umask: str = "0002"

    @property
    def umask_bits(self) -> int:
        return int(self.umask, 8)


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file: models x variants, where their runs go, what each job asks for."""

    name: str
    path: Path
    dataset: str
    method: str
    data_root: Path
    dataset_root: Path
    models: tuple[str, ...]
    variants: tuple[Variant, ...]
    templates_dir: Path
    training: Training = Training()
    sharing: Sharing = Sharing()
    resources: Resources = Resources()
    variant_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    model_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise SpecError(self.path, "variants", f"unknown variant {name!r} (in this sweep: {_names(self.variants)})")

    def model_template(self, model: str) -> Path:
        return self.templates_dir / "models" / f"{model}.py"

    def runs(self, models: Iterable[str] = (), variants: Iterable[str] = ()) -> list[Run]:
        """Every (model, variant) of the sweep, variant-major, optionally filtered by name."""
        wanted_models = list(models) or list(self.models)
        wanted_variants = list(variants) or [v.name for v in self.variants]
        for model in wanted_models:
            if model not in self.models:
                known = ", ".join(self.models)
                raise SpecError(self.path, "models", f"unknown model {model!r} (in this sweep: {known})")
        for name in wanted_variants:
            self.variant(name)
        return [
            Run(model=m, variant=v, method=self.method, dataset=self.dataset, data_root=self.data_root)
            for v in wanted_variants
            for m in self.models
            if m in wanted_models
        ]

    def resources_for(self, run: Run) -> Resources:
        """Sweep defaults, then the variant's overrides, then the model's."""
        merged = self.resources
        for table in (self.variant_resources.get(run.variant, {}), self.model_resources.get(run.model, {})):
            merged = replace(merged, **table)
        return merged


def load_sweep(path: Path, *, data_root: Path | None = None) -> Sweep:
    """Parse and validate a sweep file. ``data_root`` overrides the file's (``--data-root``)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(path, None, "sweep file not found") from None
    except OSError as exc:
        raise SpecError(path, None, f"cannot read sweep file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(path, None, f"not valid TOML ({exc})") from None

    _refuse_unknown(path, "", raw, _SWEEP_KEYS)
    templates_dir = default_templates_dir()
    if "templates" in raw:
        templates_dir = (path.parent / _str(path, "templates", raw["templates"])).resolve()
        if not (templates_dir / "models").is_dir():
            raise SpecError(path, "templates", f"{templates_dir} has no models/ folder")

    root_text = _str(path, "data_root", _require(path, raw, "data_root"))
    # --data-root wins without expanding the file's value: its ${VAR} need not be set then.
    root = data_root if data_root is not None else Path(_expand(path, "data_root", root_text))
    dataset_root = Path(_expand(path, "dataset_root", _str(path, "dataset_root", _require(path, raw, "dataset_root"))))

    models = tuple(_str_list(path, "models", _require(path, raw, "models")))
    for model in models:
        if not (templates_dir / "models" / f"{model}.py").is_file():
            known = ", ".join(sorted(p.stem for p in (templates_dir / "models").glob("*.py")))
            raise SpecError(path, "models", f"unknown model {model!r} (known: {known})")
    _refuse_duplicates(path, "models", models)

    training = _dataclass_from(path, "training", raw.get("training", {}), Training)
    sharing = _dataclass_from(path, "sharing", raw.get("sharing", {}), Sharing)
    if sharing.lock_mode not in LOCK_MODES:
        raise SpecError(path, "sharing.lock_mode", f"must be one of {', '.join(LOCK_MODES)}, got {sharing.lock_mode!r}")
    if not (len(sharing.umask) in (3, 4) and all(c in "01234567" for c in sharing.umask)):
        raise SpecError(path, "sharing.umask", f"must be an octal umask like '0002', got {sharing.umask!r}")
    variant_names = _str_list(path, "variants", _require(path, raw, "variants"))
    _refuse_duplicates(path, "variants", variant_names)
    crop_default = raw.get("crop_size", [512, 512])
    variants = tuple(load_variant(templates_dir, name, path, crop_default) for name in variant_names)

    resources_raw = dict(raw.get("resources", {}))
    if not isinstance(resources_raw, dict):
        raise SpecError(path, "resources", "must be a table")
    per_variant = resources_raw.pop("variants", {})
    per_model = resources_raw.pop("models", {})
    resources = _dataclass_from(path, "resources", resources_raw, Resources)
    variant_resources = _overrides(path, "resources.variants", per_variant, set(variant_names))
    model_resources = _overrides(path, "resources.models", per_model, set(models))

    return Sweep(
        name=_str(path, "name", raw.get("name", path.stem)),
        path=path.resolve(),
        dataset=_str(path, "dataset", _require(path, raw, "dataset")),
        method=_str(path, "method", raw.get("method", "baseline")),
        data_root=root.expanduser().absolute(),
        dataset_root=dataset_root.expanduser().absolute(),
        models=models,
        variants=variants,
        templates_dir=templates_dir,
        training=training,
        sharing=sharing,
        resources=resources,
        variant_resources=variant_resources,
        model_resources=model_resources,
    )


def load_variant(templates_dir: Path, name: str, sweep_path: Path, crop_default: Any = (512, 512)) -> Variant:
    vpath = templates_dir / "variants" / f"{name}.toml"
    if not vpath.is_file():
        known = ", ".join(sorted(p.stem for p in (templates_dir / "variants").glob("*.toml")))
        raise SpecError(sweep_path, "variants", f"unknown variant {name!r} (known: {known})")
    try:
        raw = tomllib.loads(vpath.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(vpath, None, f"not valid TOML ({exc})") from None
    _refuse_unknown(vpath, "", raw, _VARIANT_KEYS)

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
    crop = raw.get("crop_size", crop_default)
    if not (isinstance(crop, list | tuple) and len(crop) == 2 and all(isinstance(c, int) and c > 0 for c in crop)):
        raise SpecError(vpath, "crop_size", f"must be [height, width] in pixels, got {crop!r}")
    return Variant(
        name=name,
        max_iters=max_iters,
        batch_size=batch_size,
        lr=lr,
        warmup_iters=warmup,
        val_interval=val_interval,
        checkpoint_interval=positive("checkpoint_interval", val_interval),
        crop_size=(crop[0], crop[1]),
        lr_rule=rule,
        lr_scale=scale,
        description=_str(vpath, "description", raw.get("description", "")),
        source=vpath,
    )


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
    _refuse_unknown(vpath, "lr_scaling.", scaling, {"rule", "base_lr", "base_batch_size"})
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


_SWEEP_KEYS = {
    "name", "dataset", "method", "data_root", "dataset_root", "models", "variants",
    "templates", "training", "resources", "crop_size", "sharing",
}
_VARIANT_KEYS = {
    "description", "max_iters", "batch_size", "lr", "lr_scaling", "warmup_iters",
    "val_interval", "checkpoint_interval", "crop_size",
}
_ZERO_ALLOWED = {"max_requeues", "num_workers", "seed", "gpus_per_node"}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(path: Path, key: str, text: str) -> str:
    """``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise SpecError(path, key, f"${{{name}}} is not set (export it, or pass --data-root)")

    return _ENV.sub(sub, text)


def _require(path: Path, raw: Mapping[str, Any], key: str) -> Any:
    if key not in raw:
        raise SpecError(path, key, "missing (required)")
    return raw[key]


def _str(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SpecError(path, key, f"must be a string, got {value!r}")
    return value


def _str_list(path: Path, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SpecError(path, key, f"must be a non-empty list of names, got {value!r}")
    return value


def _refuse_duplicates(path: Path, key: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SpecError(path, key, f"{name!r} is listed twice")
        seen.add(name)


def _refuse_unknown(path: Path, prefix: str, raw: Mapping[str, Any], valid: set[str]) -> None:
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise SpecError(
            path, prefix + unknown[0], f"unknown field (valid fields are: {', '.join(sorted(valid))})"
        )


def _dataclass_from(path: Path, key: str, raw: Any, cls: type[Any]) -> Any:
    if not isinstance(raw, dict):
        raise SpecError(path, key, "must be a table")
    return cls(**_checked_fields(path, key, raw, cls))


def _checked_fields(path: Path, key: str, raw: Mapping[str, Any], cls: type[Any]) -> dict[str, Any]:
    """Type-check a table against a dataclass's fields (types taken from its defaults)."""
    specs = {f.name: f for f in fields(cls)}
    _refuse_unknown(path, f"{key}.", raw, set(specs))
    checked: dict[str, Any] = {}
    defaults = cls()
    for name, value in raw.items():
        default = getattr(defaults, name)
        where = f"{key}.{name}"
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SpecError(path, where, f"must be a list of strings, got {value!r}")
            value = tuple(value)
        elif isinstance(default, bool) or isinstance(value, bool):
            raise SpecError(path, where, f"unexpected boolean {value!r}")
        elif isinstance(default, int):
            low = 0 if name in _ZERO_ALLOWED else 1
            if not isinstance(value, int) or value < low:
                raise SpecError(path, where, f"must be an integer >= {low}, got {value!r}")
        elif name == "mem_gb":
            if not isinstance(value, int | float) or value <= 0:
                raise SpecError(path, where, f"must be a positive number, got {value!r}")
        elif not isinstance(value, str):
            raise SpecError(path, where, f"must be a string, got {value!r}")
        checked[name] = value
    return checked


def _overrides(path: Path, key: str, raw: Any, allowed: set[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise SpecError(path, key, "must be a table of tables")
    out: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        if name not in allowed:
            raise SpecError(path, f"{key}.{name}", f"not in this sweep (sweep has: {', '.join(sorted(allowed))})")
        if not isinstance(table, dict):
            raise SpecError(path, f"{key}.{name}", "must be a table")
        out[name] = _checked_fields(path, f"{key}.{name}", table, Resources)
    return out


def _names(variants: Iterable[Variant]) -> str:
    return ", ".join(v.name for v in variants)
