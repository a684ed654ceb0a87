"""Every departure of a run's rendered config from the model-zoo config its model template inherits.

Three configs per run, read with mmengine (all ``_base_`` resolved): the **zoo** (the model template's
own ``_base_``, an ``mmseg::`` config), the **template** layer (``prove/model.py`` as rendered, alone)
and the **rendered** run config (model.py + config.py). Only the training recipe is compared
(:data:`RECIPE_SECTIONS`); dicts key by key, pipeline-like lists (every item a dict with a ``type``)
step by step, other lists whole. Bookkeeping (hooks, logging, workers, registry scopes) is left out.

Which layer changed a key: ``model template`` when model.py already departs there and the run keeps
model.py's value; else the run layer, split by re-rendering the run twice, once with the variant's
numbers perturbed and once with the sweep's settings perturbed: a key that moves with the variant is
the variant's, one that moves only with the sweep is the sweep's, one that moves with neither is the
run template's fixed text (``job_templates/run_config.py.tmpl``). Three config reads per run (rendered,
variant perturbed, sweep perturbed) and two per model template (zoo, template), ~0.15 s each after
mmengine's import; mmengine is imported only inside functions.
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError
from prove_jobs.render import RenderedRun, read_config, read_rendered, render_run
from prove_jobs.runs import MODEL_FILE, Run
from prove_jobs.spec import Evaluation, Sweep
from prove_jobs.weights import render_model

RECIPE_SECTIONS = (
    "model", "train_dataloader", "val_dataloader", "test_dataloader", "optim_wrapper", "param_scheduler",
    "train_cfg", "val_cfg", "test_cfg", "val_evaluator", "test_evaluator", "sync_bn", "auto_scale_lr",
)
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
# How fast data loads, not what is trained: a sweep's [training] num_workers, and follows from it.
LOADER_BOOKKEEPING = frozenset({"num_workers", "persistent_workers"})
# mmengine's registry scope, stamped on every dict of a package's base config (`_scope_='mmseg'`)
# and on none written by prove-jobs: it names where a type is looked up, not what is trained.
SCOPE_KEY = "_scope_"
# mmcv's names for plain batch norm: torch's convert_sync_batchnorm turns every one into SyncBN.
BATCH_NORMS = frozenset({"BN", "BN1d", "BN2d", "BN3d"})
SYNC_NORMS = {"torch": "SyncBN", "mmcv": "MMSyncBN"}  # mmengine's cfg.sync_bn -> the layers it makes


class Layer(Enum):
    """Which layer of a run's config changed a key from the model zoo's value."""

    MODEL_TEMPLATE = "model template"
    """``job_templates/models/<model>.py`` (as rendered into ``prove/model.py``) sets it."""
    VARIANT = "variant"
    """The variant's numbers: iterations, batch, LR, warmup, intervals, crop (and what the template derives)."""
    SWEEP = "sweep"
    """The sweep file's settings: dataset root, [training], the GPUs a run spans."""
    RUN_TEMPLATE = "run template"
    """``job_templates/run_config.py.tmpl``'s fixed text (the unified optimizer and schedule shape)."""


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT: Any = _Absent()  # a key the config does not have


@dataclass(frozen=True)
class Departure:
    """One key where a run's config differs from the model zoo's; values as ``repr`` (``None``: absent)."""

    key: str
    zoo: str | None
    rendered: str | None
    layer: Layer


@dataclass(frozen=True)
class RunDepartures:
    """What one run changes of the model-zoo config it inherits."""

    run: Run
    zoo_config: str  # the model template's _base_, e.g. mmseg::segformer/segformer_mit-b3_8xb1-...py
    world_size: int
    rows: tuple[Departure, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run.name, "model": self.run.model, "variant": self.run.variant, "seed": self.run.seed,
            "zoo_config": self.zoo_config, "world_size": self.world_size,
            "departures": [{"key": d.key, "zoo": d.zoo, "rendered": d.rendered, "layer": d.layer.value}
                           for d in self.rows],
        }


# --- comparing two configs ------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """A path component: the item of a pipeline-like list whose ``type`` is ``label`` (``Resize#2``: the second)."""

    label: str


KeyPath = tuple[str | Step, ...]


def key_text(path: KeyPath) -> str:
    """``('train_dataloader', 'dataset', 'pipeline', Step('RandomCrop'), 'crop_size')`` ->
    ``train_dataloader.dataset.pipeline[RandomCrop].crop_size``."""
    text = ""
    for part in path:
        text += f"[{part.label}]" if isinstance(part, Step) else (f".{part}" if text else part)
    return text


def recipe(config: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe sections of a config (a plain dict, e.g. ``Config.to_dict()``), bookkeeping left out."""
    return {name: _without_bookkeeping(name, config[name]) for name in RECIPE_SECTIONS if name in config}


def _without_bookkeeping(section: str, value: Any) -> Any:
    if section in LOADERS and isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if k not in LOADER_BOOKKEEPING}
    return _strip(value)


def _strip(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip(v) for k, v in value.items()
                if not (isinstance(k, str) and (k == SCOPE_KEY or k.startswith("prove_")))}
    if isinstance(value, list | tuple):
        return type(value)(_strip(v) for v in value)
    return value


def effective(config: Mapping[str, Any], world_size: int) -> dict[str, Any]:
    """A recipe with its normalisation as it takes effect in a run of ``world_size`` processes.

    mmengine's runner reverts SyncBN to BN when not distributed, and with ``sync_bn='torch'``
    (``'mmcv'``) converts every BN to SyncBN (MMSyncBN) when it is: a zoo SyncBN and a rendered BN
    are one layer at one process, and so are BN + ``sync_bn='torch'`` and SyncBN at several. The
    ``sync_bn`` key is folded into the norm layers it makes, and dropped.
    """
    sync = config.get("sync_bn")
    out = dict(config)
    if world_size > 1 and sync not in (None, *SYNC_NORMS):
        return out  # a value mmengine refuses: left in, compared as it is
    out.pop("sync_bn", None)
    if world_size <= 1:
        rename = {sync_type: "BN" for sync_type in SYNC_NORMS.values()}
    elif sync is not None:
        rename = dict.fromkeys(BATCH_NORMS, SYNC_NORMS[sync])
    else:
        return out
    if "model" in out:
        out["model"] = _renamed_norms(out["model"], rename)
    return out


def _renamed_norms(value: Any, rename: Mapping[str, str]) -> Any:
    if isinstance(value, Mapping):
        return {k: (rename.get(v, v) if k == "type" and isinstance(v, str) else _renamed_norms(v, rename))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_renamed_norms(v, rename) for v in value)
    return value


def _children(value: Any) -> dict[str | Step, Any] | None:
    """A dict's items, a pipeline-like list's steps by type; ``None`` for a value compared whole."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple) and value and all(
            isinstance(item, Mapping) and isinstance(item.get("type"), str) for item in value):
        steps: dict[str | Step, Any] = {}
        seen: dict[str, int] = {}
        for item in value:
            kind = item["type"]
            seen[kind] = n = seen.get(kind, 0) + 1
            steps[Step(kind if n == 1 else f"{kind}#{n}")] = item
        return steps
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal as mmengine uses them: a list and a tuple of the same items are one value, None and absent too."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, _Absent) or isinstance(b, _Absent):
        # `clip_grad=None`, `init_cfg=None`: None is what mmengine and mmseg assume for a setting left out
        return a is b or a is None or b is None
    return (type(a) is type(b) or (_number(a) and _number(b))) and bool(a == b)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def diff(zoo: Any, rendered: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any, Any]]:
    """Every (path, zoo value, rendered value) where they differ: dicts key by key, pipeline-like lists
    step by step; a subtree only one side has is one row (the whole dict or step against ``ABSENT``)."""
    zoo_kids, rendered_kids = _children(zoo), _children(rendered)
    if zoo_kids is not None and rendered_kids is not None and isinstance(zoo, Mapping) == isinstance(rendered, Mapping):
        for key in [*zoo_kids, *(k for k in rendered_kids if k not in zoo_kids)]:
            yield from diff(zoo_kids.get(key, ABSENT), rendered_kids.get(key, ABSENT), (*path, key))
    elif not _same(zoo, rendered):
        yield path, zoo, rendered


def value_at(config: Any, path: KeyPath) -> Any:
    for part in path:
        kids = _children(config)
        if kids is None or part not in kids:
            return ABSENT
        config = kids[part]
    return config


def show(value: Any) -> str | None:
    """A value as a config would write it, compactly (``None`` for an absent key)."""
    if isinstance(value, _Absent):
        return None
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            return "dict(" + ", ".join(f"{k}={_show(v)}" for k, v in value.items()) + ")"
        return "{" + ", ".join(f"{_show(k)}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_show, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(_show, value)) + "]"
    return repr(value)


# --- attributing each departure to a layer ---------------------------------------------------------

def perturbed_variant(sweep: Sweep) -> Sweep:
    """The sweep with every number of every variant changed (each to a value still valid). A model-zoo
    variant sets only its total batch (the rest is the model's own recipe): that is what moves."""
    return replace(sweep, variants=tuple(
        replace(v, zoo_batch_size=(v.zoo_batch_size or 2048) * 2) if v.per_model else
        replace(v, max_iters=v.max_iters + 7, batch_size=v.batch_size * 2, lr=v.lr * 1.5,
                warmup_iters=v.warmup_iters + 1, val_interval=v.val_interval + 1,
                checkpoint_interval=v.checkpoint_interval + 1,
                crop_size=(v.crop_size[0] + 32, v.crop_size[1] + 32))
        for v in sweep.variants))


def perturbed_sweep(sweep: Sweep, run: Run) -> tuple[Sweep, Run]:
    """The sweep with every setting a run layer reads changed: dataset root, [training], the run's GPUs.

    Add a sweep setting here when the run template starts to read it, else its keys read as the
    run template's. The seed is the run's (its own, or the sweep's).
    """
    training = sweep.training
    model_resources = dict(sweep.model_resources)
    nodes = sweep.resources_for(run).nodes
    model_resources[run.model] = {**sweep.model_resources.get(run.model, {}), "nodes": nodes * 2}
    evaluation = Evaluation() if sweep.evaluation.mode == "slide" else Evaluation("slide", (97, 97), (89, 89))
    # the weight cache (where the checkpoint is read from) and whether the sweep trains from scratch
    changed = replace(sweep, dataset_root=sweep.dataset_root / "prove-perturbed", model_resources=model_resources,
                      evaluation=evaluation, weights_cache=sweep.weights_cache / "prove-perturbed",
                      pretrained=not sweep.pretrained,
                      training=replace(training, num_workers=training.num_workers + 1,
                                       log_interval=training.log_interval + 1, seed=training.seed + 1))
    return changed, replace(run, seed=sweep.training_seed(run) + 1)


def attribute(path: KeyPath, zoo: Any, template: Any, rendered: Any, variant_moved: Any, sweep_moved: Any) -> Layer:
    """The layer that changed ``path`` (each argument a whole recipe, as :func:`effective` gives it)."""
    mine = value_at(template, path)
    if not _same(mine, value_at(zoo, path)) and _same(mine, value_at(rendered, path)):
        return Layer.MODEL_TEMPLATE
    here = value_at(rendered, path)
    if not _same(here, value_at(variant_moved, path)):
        return Layer.VARIANT  # also when the sweep moves it: the per-process batch is the variant's total / GPUs
    if not _same(here, value_at(sweep_moved, path)):
        return Layer.SWEEP
    return Layer.RUN_TEMPLATE


# --- the runs of a sweep ---------------------------------------------------------------------------

def zoo_bases(sweep: Sweep, model: str, model_text: str) -> list[str]:
    """The model template's ``_base_``, read without running it."""
    bases: Any = None
    try:
        for stmt in ast.parse(model_text).body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in stmt.targets):
                bases = ast.literal_eval(stmt.value)
    except (SyntaxError, ValueError):
        bases = None
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list | tuple) or not bases or not all(isinstance(b, str) for b in bases):
        raise SpecError(sweep.model_template(model), "_base_",
                        "no model-zoo config to compare with (a list of config names, e.g. ['mmseg::...'], expected)")
    return list(bases)


def departures(sweep: Sweep, runs: Sequence[Run]) -> list[RunDepartures]:
    """Every departure of each run's rendered config from its model-zoo config, with the layer that made it."""
    layers: dict[str, tuple[list[str], dict[str, Any], dict[str, Any]]] = {}  # model.py text -> bases, zoo, template
    out = []
    for run in runs:
        rendered = render_run(sweep, run)
        if rendered.model_text not in layers:
            layers[rendered.model_text] = _model_layers(sweep, rendered)
        bases, zoo, template = layers[rendered.model_text]
        world = sweep.resources_for(run).world_size
        full = _recipe_of(sweep, rendered, world)
        by_variant = _recipe_of(sweep, render_run(perturbed_variant(sweep), run), world)
        other_sweep, other_run = perturbed_sweep(sweep, run)
        by_sweep = _recipe_of(other_sweep, render_run(other_sweep, other_run),
                              other_sweep.resources_for(other_run).world_size)
        zoo_here, template_here = effective(zoo, world), effective(template, world)
        rows = tuple(
            Departure(key_text(path), show(before), show(after),
                      attribute(path, zoo_here, template_here, full, by_variant, by_sweep))
            for path, before, after in diff(zoo_here, full)
        )
        out.append(RunDepartures(run=run, zoo_config=" + ".join(bases), world_size=world, rows=rows))
    return out


def _recipe_of(sweep: Sweep, rendered: RenderedRun, world_size: int) -> dict[str, Any]:
    return effective(recipe(read_rendered(sweep, rendered).to_dict()), world_size)


def _model_layers(sweep: Sweep, rendered: RenderedRun) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """The zoo config (a stub inheriting the template's ``_base_``) and the template layer, as recipes."""
    bases = zoo_bases(sweep, rendered.run.model, rendered.model_text)
    what = f"{sweep.model_template(rendered.run.model)}"
    with tempfile.TemporaryDirectory(prefix="prove-departures-") as scratch:
        # beside model.py, so that a relative _base_ resolves for both as it does for the run
        stub = Path(scratch) / "zoo.py"
        stub.write_text(f"_base_ = {bases!r}\n")
        # the template as its author wrote it (the checkpoint's URL, not this sweep's cache path)
        (Path(scratch) / MODEL_FILE).write_text(_as_written(sweep, rendered.run.model))
        zoo = recipe(read_config(stub, f"{what} (_base_ {' + '.join(bases)})").to_dict())
        template = recipe(read_config(Path(scratch) / MODEL_FILE, what).to_dict())
    return bases, zoo, template


def _as_written(sweep: Sweep, model: str) -> str:
    """The model template with its checkpoint as a URL (or from scratch when the template says so)."""
    template = sweep.model_template(model)
    return render_model(template, template.read_text(), sweep.weights_cache, True).portable
