"""Sweep files: which models, which variants (training recipes), where, on what resources.

A sweep file is TOML; a variant is one TOML file under ``<templates>/variants/`` (``variant.py``);
a model is one mmengine config under ``<templates>/models/``. Everything is validated here,
once, so that later stages can trust a ``Sweep``. See docs/sweep-file.md for the format.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError
from prove_jobs.metadata import one_seed_run
from prove_jobs.run_filter import RunFilter
from prove_jobs.runs import Run
from prove_jobs.spec.evaluation import Evaluation, load_evaluation
from prove_jobs.spec.fields import (
    absolute,
    as_str,
    crop,
    dataclass_from,
    expand,
    find_template,
    overrides,
    refuse_duplicates,
    refuse_unknown,
    require,
    seed_list,
    seeds_by_variant,
    str_list,
    weights_fields,
)
from prove_jobs.spec.model import ModelFacts, read_model_facts
from prove_jobs.spec.variant import Variant, load_variant, zoo_recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["LOCK_MODES", "Evaluation", "ModelFacts", "Resources", "Sharing", "Sweep", "Training", "Variant",
           "default_templates_dir", "load_sweep", "load_variant"]

LOCK_MODES = ("fcntl", "soft")
SWEEP_KEYS = {
    "name", "dataset", "method", "data_root", "dataset_root", "models", "variants",
    "templates", "training", "resources", "crop_size", "sharing", "seeds", "variant_seeds", "evaluation",
    "pretrained", "weights_cache",
}


@functools.cache
def default_templates_dir() -> Path:
    """``job_templates/`` beside the package (editable install) or inside it (wheel)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "job_templates", here / "job_templates"):
        if (candidate / "models").is_dir():
            return candidate
    raise SpecError(here, None, "job_templates/ not found next to the prove_jobs package; reinstall it")


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for. ``None`` leaves the cluster's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1  # one task (one training process) per GPU, as mmseg's tools/slurm_train.sh
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
    # At most this many of a submission's array tasks run at once (--array=0-K%N); None: SLURM's default.
    max_running: int | None = None
    # A job across processes: how long a collective (DDP's all-reduce) may wait for a rank before the job
    # fails. A lost node or a network partition would otherwise hold the others to the time limit (torch's
    # own default is 30 minutes). Large enough for the slowest validation or checkpoint rank 0 does alone.
    collective_timeout_s: int = 600

    @property
    def tasks_per_node(self) -> int:
        """Training processes per node: one per GPU (a CPU-only job has one)."""
        return max(self.gpus_per_node, 1)

    @property
    def world_size(self) -> int:
        """Training processes in all: DDP's world size."""
        return self.nodes * self.tasks_per_node

    @property
    def layout(self) -> str:
        """``2x4 GPUs`` (nodes x GPUs per node), ``2 GPUs``, ``1 GPU``, ``CPU``: what the dashboard and plan show."""
        if not self.gpus_per_node:
            return "CPU" if self.nodes == 1 else f"{self.nodes} nodes"
        if self.nodes == 1:
            return f"{self.gpus_per_node} GPU{'s' if self.gpus_per_node > 1 else ''}"
        return f"{self.nodes}x{self.gpus_per_node} GPUs"


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
    templates_dir: Path  # the sweep's own `templates` folder, else the shipped one
    training: Training = Training()
    sharing: Sharing = Sharing()
    resources: Resources = Resources()
    variant_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    model_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    unset: tuple[str, ...] = ()  # a preview's ${VAR}s that are not set: the paths still hold them
    seeds: tuple[int, ...] = ()  # `seeds = [0, 1, 2]`; empty: one run per (model, variant) with [training] seed
    variant_seeds: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # [variant_seeds] overrides
    evaluation: Evaluation = field(default_factory=Evaluation)
    model_facts: Mapping[str, ModelFacts] = field(default_factory=dict)  # each model template's prove_* literals
    # `pretrained = false`: every run from scratch; true: each model from the checkpoint its template names
    pretrained: bool = True
    weights_cache: Path = Path()  # where checkpoints are fetched to (docs/weights.md); load_sweep always sets it

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise SpecError(self.path, "variants", f"unknown variant {name!r} (in this sweep: {_names(self.variants)})")

    def model_template(self, model: str) -> Path:
        return self.template(f"models/{model}.py")

    def template(self, relative: str) -> Path:
        """A template file: from the sweep's own `templates` folder when it has it, else the shipped one."""
        return find_template(_template_dirs(self.templates_dir), relative)

    def recipe(self, run: Run) -> Variant:
        """What ``run`` trains: its variant, with a model-zoo variant's numbers taken from the run's model."""
        variant = self.variant(run.variant)
        if not variant.per_model:
            return variant
        zoo = self.facts(run.model).zoo
        if zoo is None:  # load_sweep refuses this; a hand-built Sweep may not
            raise SpecError(self.model_template(run.model), "prove_zoo",
                            f"missing: variant {variant.name} trains the model zoo's recipe")
        return zoo_recipe(variant, zoo)

    def facts(self, model: str) -> ModelFacts:
        return self.model_facts.get(model) or ModelFacts(name=model)

    def sync_bn(self, run: Run) -> bool:
        """Whether ``run``'s BN layers normalise over all its GPUs (mmengine's ``sync_bn``): several GPU processes."""
        resources = self.resources_for(run)
        return resources.world_size > 1 and resources.gpus_per_node > 0

    def seeds_for(self, variant: str) -> tuple[int, ...]:
        """The seeds a variant trains: its ``[variant_seeds]`` entry, the sweep's ``seeds``, or ``[training] seed``."""
        return self.variant_seeds.get(variant) or self.seeds or (self.training.seed,)

    def training_seed(self, run: Run) -> int:
        """The seed ``run`` trains with (a one-seed variant's runs carry none in their name)."""
        return run.seed if run.seed is not None else self.seeds_for(run.variant)[0]

    def runs(self, models: Iterable[str] = (), variants: Iterable[str] = (), seeds: Iterable[int] = ()) -> list[Run]:
        """Every (model, variant, seed) of the sweep, variant-major, then model, then seed; optionally filtered.

        A variant with one seed has one run per model, in ``<model>/`` (the layout before seeds); with
        several, one per seed in ``<model>/seed<k>/``.
        """
        return self.select(RunFilter.of(models, variants, seeds))

    def select(self, only: RunFilter) -> list[Run]:
        """The runs of the sweep ``only`` asks for (:meth:`runs`); a variant asked for twice is listed twice, in
        the order asked. A name the sweep lacks is refused."""
        self._refuse_unknown(only)
        variants = only.variants or [v.name for v in self.variants]
        # only the models asked for: a model's runs of several seeds read its folder's metadata
        models = [m for m in self.models if not only.models or m in only.models]
        runs = [run for v in variants for m in models for run in self._model_runs(m, v)]
        return only.apply(runs, seed_of=self.training_seed)

    def _refuse_unknown(self, only: RunFilter) -> None:
        # A name asked for on the command line that the sweep lacks is the option's mistake, not the file's.
        for model in only.models:
            if model not in self.models:
                raise SpecError("--model", None, f"{model!r} is not a model of sweep {self.name} "
                                f"({self.path.name} has: {', '.join(self.models)})")
        for name in only.variants:
            if name not in {v.name for v in self.variants}:
                raise SpecError("--variant", None, f"{name!r} is not a variant of sweep {self.name} "
                                f"({self.path.name} has: {_names(self.variants)})")
        everywhere = {k for v in self.variants for k in self.seeds_for(v.name)}
        if set(only.seeds) - everywhere:
            raise SpecError("--seed", None, f"no variant of sweep {self.name} trains seed "
                            f"{min(set(only.seeds) - everywhere)} (seeds: {', '.join(map(str, sorted(everywhere)))})")

    def _model_runs(self, model: str, variant: str) -> list[Run]:
        """(model, variant)'s runs, one per seed: in ``<model>/seed<k>/``, except the seed an earlier one-seed run
        of it trained in ``<model>/`` itself (read from its metadata: one small file per model with several seeds)."""
        runs = [Run(model=model, variant=variant, method=self.method, dataset=self.dataset, data_root=self.data_root,
                    seed=k) for k in self._run_seeds(variant)]
        if runs[0].seed is None:
            return runs
        kept = one_seed_run(runs[0].run_dir.parent)
        return [replace(run, path=run.run_dir.parent) if run.seed == kept else run for run in runs]

    def _run_seeds(self, variant: str) -> list[int | None]:
        seeds = self.seeds_for(variant)
        return [None] if len(seeds) == 1 else list(seeds)

    def resources_for(self, run: Run) -> Resources:
        """Sweep defaults, then the variant's overrides, then the model's."""
        merged = self.resources
        for table in (self.variant_resources.get(run.variant, {}), self.model_resources.get(run.model, {})):
            merged = replace(merged, **table)
        return merged


def load_sweep(path: Path, *, data_root: Path | None = None, preview: bool = False) -> Sweep:
    """Parse and validate a sweep file. ``data_root`` overrides the file's (``--data-root``).

    ``preview`` (``plan``, ``render``): a ``${VAR}`` that is not set stays as written in the
    paths (``Sweep.unset`` names it) instead of being an error.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(path, None, "sweep file not found") from None
    except OSError as exc:
        raise SpecError(path, None, f"cannot read sweep file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(path, None, f"not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise SpecError(path, None, "not a text file (a sweep file is TOML)") from None

    refuse_unknown(path, "", raw, SWEEP_KEYS)
    templates_dir = default_templates_dir()
    if "templates" in raw:
        templates_dir = (path.parent / as_str(path, "templates", raw["templates"])).resolve()
        if not templates_dir.is_dir():
            raise SpecError(path, "templates", f"{templates_dir} is not a folder (it may hold models/, variants/ "
                            "and run_config*.py.tmpl, each added to or replacing the shipped ones)")
    dirs = _template_dirs(templates_dir)

    unset: list[str] | None = [] if preview else None
    root_text = as_str(path, "data_root", require(path, raw, "data_root"))
    # --data-root wins without expanding the file's value: its ${VAR} need not be set then.
    root = data_root if data_root is not None else Path(
        expand(path, "data_root", root_text, hint="or pass --data-root DIR", unset=unset))
    dataset_root = Path(expand(path, "dataset_root", as_str(path, "dataset_root", require(path, raw, "dataset_root")),
                               hint="--data-root sets where runs go, not dataset_root", unset=unset))

    models = tuple(str_list(path, "models", require(path, raw, "models")))
    for model in models:
        if not find_template(dirs, f"models/{model}.py").is_file():
            known = ", ".join(sorted({p.stem for d in dirs for p in (d / "models").glob("*.py")}))
            raise SpecError(path, "models", f"unknown model {model!r} (known: {known})")
    refuse_duplicates(path, "models", models)

    training = dataclass_from(path, "training", raw.get("training", {}), Training)
    sharing = dataclass_from(path, "sharing", raw.get("sharing", {}), Sharing)
    if sharing.lock_mode not in LOCK_MODES:
        raise SpecError(path, "sharing.lock_mode", f"must be one of {', '.join(LOCK_MODES)}, got {sharing.lock_mode!r}")
    if not (len(sharing.umask) in (3, 4) and all(c in "01234567" for c in sharing.umask)):
        raise SpecError(path, "sharing.umask", f"must be an octal umask like '0002', got {sharing.umask!r}")
    variant_names = str_list(path, "variants", require(path, raw, "variants"))
    refuse_duplicates(path, "variants", variant_names)
    crop_default = crop(path, "crop_size", raw.get("crop_size", [512, 512]))
    variants = tuple(load_variant(dirs, name, path, crop_default) for name in variant_names)

    resources_raw = raw.get("resources", {})
    if not isinstance(resources_raw, dict):
        raise SpecError(path, "resources", "must be a table")
    resources_raw = dict(resources_raw)
    per_variant = resources_raw.pop("variants", {})
    per_model = resources_raw.pop("models", {})
    resources = dataclass_from(path, "resources", resources_raw, Resources)
    variant_resources = overrides(path, "resources.variants", per_variant, set(variant_names), Resources)
    model_resources = overrides(path, "resources.models", per_model, set(models), Resources)
    seeds = seed_list(path, "seeds", raw["seeds"]) if "seeds" in raw else ()
    if seeds and "seed" in raw.get("training", {}):
        raise SpecError(path, "seeds", "set either seeds = [...] or [training] seed, not both")
    variant_seeds = seeds_by_variant(path, raw.get("variant_seeds", {}), set(variant_names))
    facts = {model: read_model_facts(find_template(dirs, f"models/{model}.py")) for model in models}
    for variant in variants:
        lacking = [m for m in models if variant.per_model and facts[m].zoo is None]
        if lacking:
            raise SpecError(path, "variants", f"variant {variant.name} trains each model's model-zoo recipe, but "
                            f"{find_template(dirs, f'models/{lacking[0]}.py')} has no prove_zoo")
    pretrained, weights_cache = weights_fields(path, raw, absolute(root), unset)

    sweep = Sweep(
        name=as_str(path, "name", raw.get("name", path.stem)),
        path=path.resolve(),
        dataset=as_str(path, "dataset", require(path, raw, "dataset")),
        method=as_str(path, "method", raw.get("method", "baseline")),
        data_root=absolute(root),
        dataset_root=absolute(dataset_root),
        models=models,
        variants=variants,
        templates_dir=templates_dir,
        training=training,
        sharing=sharing,
        resources=resources,
        variant_resources=variant_resources,
        model_resources=model_resources,
        unset=tuple(dict.fromkeys(unset or ())),
        seeds=seeds,
        variant_seeds=variant_seeds,
        evaluation=load_evaluation(path, raw.get("evaluation", {})),
        model_facts=facts,
        pretrained=pretrained,
        weights_cache=weights_cache,
    )
    _check_batches(sweep)
    return sweep


def _template_dirs(own: Path) -> tuple[Path, ...]:
    """Where templates are looked for: a sweep's own folder first, then the shipped one."""
    shipped = default_templates_dir()
    return (own,) if own == shipped else (own, shipped)


def _check_batches(sweep: Sweep) -> None:
    """A variant's batch_size is the total batch of one step: it must split evenly over the run's processes,
    and a model whose BN follows a 1x1 pooling must give that BN at least two images."""
    for run in sweep.runs():
        variant, resources = sweep.recipe(run), sweep.resources_for(run)
        layout = f"nodes = {resources.nodes} x gpus_per_node = {resources.gpus_per_node}"
        if variant.batch_size % resources.world_size:
            raise SpecError(sweep.path, "resources", f"variant {variant.name}'s batch_size {variant.batch_size} "
                            f"(the total batch) does not split over {run.model}'s {resources.world_size} processes "
                            f"({layout}): make the batch a multiple of the world size, or change the resources")
        per_bn = variant.batch_size if sweep.sync_bn(run) else variant.batch_size // resources.world_size
        if sweep.facts(run.model).pooled_bn and per_bn < 2:
            where = "SyncBN over all GPUs" if sweep.sync_bn(run) else "plain BN in each process"
            raise SpecError(sweep.path, "resources", f"variant {variant.name} trains {run.model} with {per_bn} image "
                            f"per BN ({where}; {layout}, batch {variant.batch_size}): its BN after 1x1 pooling "
                            "needs at least 2 (it fails at the first step); raise the batch or use fewer processes")


def _names(variants: Iterable[Variant]) -> str:
    return ", ".join(v.name for v in variants)
