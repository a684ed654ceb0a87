"""Render a run's mmengine config from its model template and its variant.

A run's config is two files in ``<run_dir>/prove/``: ``model.py`` (the model template,
copied so that a later edit of the template never changes a run already submitted; its
``pretrained`` line names the weight cache's file, ``weights.py``) and
``config.py`` (``job_templates/run_config.py.tmpl`` filled with the variant's numbers,
inheriting from ``./model.py``). Rendering needs no mmengine; flattening (``render``
command, payload start) does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from prove_jobs.errors import SpecError, TrainingStackMissing
from prove_jobs.fsafe import atomic_write_text
from prove_jobs.rendered_check import sha256_text
from prove_jobs.runs import CONFIG_DIR, CONFIG_FILE, MODEL_FILE, Run
from prove_jobs.spec import Sweep
from prove_jobs.spec.variant import MODEL_ZOO
from prove_jobs.weights import Checkpoint, render_model

RUN_CONFIG_TEMPLATE = "run_config.py.tmpl"  # the unified recipe
ZOO_CONFIG_TEMPLATE = "run_config_zoo.py.tmpl"  # a variant with recipe = "model_zoo"
RENDERED_MODE = 0o644


@dataclass(frozen=True)
class RenderedRun:
    """A run's two config files as text, before they are written into its run dir.

    ``config_hash`` identifies what is trained: the model template and the variant's numbers as
    rendered, with the dataset named by its kind rather than by where this user keeps it, the
    checkpoint by its URL rather than by this user's weight cache, and without the header naming
    the sweep file. Two users' copies of one sweep, in their own
    folders, give one hash: "already completed by alice" and ``--after-holder`` work across users.
    """

    run: Run
    model_text: str
    config_text: str
    config_hash: str
    # What the run starts from: the checkpoint model.py names (None: from scratch, or the template names none)
    checkpoint: Checkpoint | None = None
    from_scratch: bool = False  # the template or the sweep says pretrained = False/None


def config_hash(model_text: str, portable_config: str) -> str:
    digest = hashlib.sha256()
    for text in (model_text, portable_config):
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def render_run(sweep: Sweep, run: Run) -> RenderedRun:
    model_path = sweep.model_template(run.model)
    variant = sweep.recipe(run)
    template_path = sweep.template(ZOO_CONFIG_TEMPLATE if variant.recipe == MODEL_ZOO else RUN_CONFIG_TEMPLATE)
    try:
        template_text = model_path.read_text()
        template = Template(template_path.read_text())
    except OSError as exc:
        raise SpecError(exc.filename, None, f"cannot read template ({exc.strerror})") from None
    model = render_model(model_path, template_text, sweep.weights_cache, sweep.pretrained)
    resources = sweep.resources_for(run)
    zoo = sweep.facts(run.model).zoo
    slots = {
        "model_config": repr(f"./{MODEL_FILE}"),
        "dataset_root": repr(str(sweep.dataset_root)),
        "max_iters": repr(variant.max_iters),
        # the variant's batch is the total of one step; each of the run's processes loads its share
        "batch_size": repr(variant.batch_size // resources.world_size),
        "total_batch_size": repr(variant.batch_size),
        "world_size": repr(resources.world_size),
        "lr": repr(variant.lr),
        "warmup_iters": repr(variant.warmup_iters),
        "val_interval": repr(variant.val_interval),
        "checkpoint_interval": repr(variant.checkpoint_interval),
        "crop_size": repr(tuple(variant.crop_size)),
        "log_interval": repr(sweep.training.log_interval),
        "num_workers": repr(sweep.training.num_workers),
        "seed": repr(sweep.training_seed(run)),  # in config_hash too: another seed is another training
        "test_cfg": _dict_source(sweep.evaluation.test_cfg(), delete=True),
        "evaluation": sweep.evaluation.describe(),
        "sync_bn": repr("torch" if sweep.sync_bn(run) else None),
        "lr_rule": variant.lr_rule,
        "zoo_layout": f"{zoo.gpus} GPUs x {zoo.batch_per_gpu} images ({zoo.config})" if zoo else "-",
    }
    try:
        config_text = template.substitute(slots)
        portable = template.substitute(slots, dataset_root=repr(f"<{sweep.dataset} dataset>"))
    except (KeyError, ValueError) as exc:
        raise SpecError(template_path, None, f"template does not render: bad or unknown slot {exc}") from None
    header = f"# Rendered by prove-jobs for {run.name} of sweep {sweep.name} ({sweep.path}).\n"
    return RenderedRun(run=run, model_text=model.text, config_text=header + config_text,
                       config_hash=config_hash(model.portable, portable), checkpoint=model.checkpoint,
                       from_scratch=model.from_scratch)


def _dict_source(values: dict[str, object], *, delete: bool = False) -> str:
    """``dict(_delete_=True, mode='whole')``: a config dict as mmengine configs write it (``_delete_``: the
    base's keys go, so that a slide window's crop and stride never linger under mode='whole')."""
    items = ([("_delete_", True)] if delete else []) + list(values.items())
    return "dict(" + ", ".join(f"{key}={value!r}" for key, value in items) + ")"


def rendered_files(rendered: RenderedRun) -> tuple[tuple[str, str], ...]:
    """(name in ``prove/``, text) of the files a run's job loads, in the order they are written."""
    return ((MODEL_FILE, rendered.model_text), (CONFIG_FILE, rendered.config_text))


def rendered_digests(rendered: RenderedRun) -> tuple[tuple[str, str], ...]:
    """(name, sha256) of what :func:`write_rendered` writes: the job checks them before mmengine reads a byte."""
    return tuple((name, sha256_text(text)) for name, text in rendered_files(rendered))


def write_rendered(rendered: RenderedRun) -> Path:
    """Write ``prove/model.py`` and ``prove/config.py``; returns the config path.

    Mode 0644: the group reads what a colleague will train. The folder is group-writable, so a
    member could still rename her own file over one: the job checks :func:`rendered_digests`.
    """
    folder = rendered.run.run_dir / CONFIG_DIR
    for name, text in rendered_files(rendered):
        atomic_write_text(folder / name, text, mode=RENDERED_MODE)
    return folder / CONFIG_FILE


def flatten(config_file: Path, what: str = "") -> str:
    """The full, flat mmengine config (all ``_base_`` resolved) as Python source; ``what`` names it in errors."""
    return str(read_config(config_file, what).pretty_text)


def read_config(config_file: Path, what: str = "") -> Any:
    """The mmengine ``Config`` of a file, all ``_base_`` resolved; ``what`` names it in errors.

    Its ``custom_imports`` are not imported (Mask2Former's name mmdet): a config is read, not built,
    so the lite flavour renders every model. mmengine finds ``mmseg::`` bases through pkg_resources,
    which new setuptools lack: the shim's lookup stands in (the payload installs the same).
    """
    try:
        from mmengine.config import Config
    except ImportError as exc:
        raise TrainingStackMissing(
            f"flattening a config needs mmengine and mmsegmentation ({exc}); install the train extra: "
            "pip install 'prove-jobs[train]'"
        ) from None
    from prove_jobs import mmcv_shim

    mmcv_shim.install_mmengine_package_lookup()
    try:
        return Config.fromfile(str(config_file), import_custom_modules=False)
    except Exception as exc:  # mmengine raises anything from SyntaxError to KeyError here
        raise SpecError(what or config_file, None, f"config does not load: {type(exc).__name__}: {exc}") from None


def read_rendered(sweep: Sweep, rendered: RenderedRun) -> Any:
    """The mmengine ``Config`` of a rendered run, read from a scratch copy of its two files."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="prove-render-") as scratch:
        (Path(scratch) / MODEL_FILE).write_text(rendered.model_text)
        (Path(scratch) / CONFIG_FILE).write_text(rendered.config_text)
        what = f"{sweep.model_template(rendered.run.model)} ({rendered.run.name})"
        return read_config(Path(scratch) / CONFIG_FILE, what)


def render_flat(sweep: Sweep, runs: Sequence[Run], out: Path) -> list[Path]:
    """Write each run's full, flat mmengine config to ``out/<VARIANT>__<model>.py``; returns the files.

    Every config is flattened before anything is written: one that does not load leaves no file
    and no ``out`` folder behind.
    """
    flat: dict[Path, str] = {}
    for run in runs:
        flat[out / f"{run.variant}__{run.model}.py"] = str(read_rendered(sweep, render_run(sweep, run)).pretty_text)
    out.mkdir(parents=True, exist_ok=True)
    for target, text in flat.items():
        atomic_write_text(target, text)
    return list(flat)
