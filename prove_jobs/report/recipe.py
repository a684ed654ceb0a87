"""A run's recipe from the values its config binds (``config_ast.module_values``): mmseg 1.x and 0.x.

mmseg 1.x (mmengine) writes ``train_cfg``, ``train_dataloader``, ``optim_wrapper``, ``param_scheduler``
and ``default_hooks``; mmseg 0.x (mmcv) wrote ``runner`` (or a bare ``total_iters``), ``data``
(``samples_per_gpu``), ``optimizer``, ``lr_config``, ``evaluation`` and ``checkpoint_config``. Either
way a field the config does not plainly give is ``None``, and :attr:`TrainedConfig.missing` says which
key was looked for in which file, for the report to print as a note next to its ``?``: never a 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prove_jobs.report.config_ast import UNKNOWN, Checker
from prove_jobs.runs import CONFIG_DIR

TYPE_CHECKING = False  # not typing's: a report imports little
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class TrainedConfig:
    """A run's recipe as its config file says it trained; ``None``: the file does not tell (or not plainly).

    ``batch_size`` is the total batch of one optimiser step when it is known: prove's
    ``total_batch_size``, or a hand run's per-process ``train_dataloader.batch_size`` times the
    ``GPU number`` its newest log reports. Failing both it is the per-process batch, and
    ``batch_is_per_gpu`` says so (a per-GPU 2 on 8 GPUs is not a total batch of 2). An epoch-based
    loop has ``max_epochs`` instead of ``max_iters``, and ``by_epoch``: its val interval counts epochs. The
    checkpoint interval's unit is the hook's (``checkpoint_by_epoch``): an epoch loop may save every N iterations.
    """

    max_iters: int | None = None
    batch_size: int | None = None
    batch_is_per_gpu: bool = False
    crop_size: tuple[int, int] | None = None
    optimizer: str | None = None
    lr: float | None = None
    warmup: int | None = None  # the end of the LinearLR warm-up; 0: no warm-up
    scheduler: str | None = None  # "Poly" when a PolyLR is among the schedulers, else the last one's type
    val_interval: int | None = None
    checkpoint_interval: int | None = None
    seed: int | None = None
    evaluation: str | None = None  # "whole image", "sliding window 1024×1024, stride 768×768"
    sync_bn: bool | None = None  # mmengine's sync_bn set (BN over all GPUs of a distributed run)
    init: str | None = None  # the checkpoint's file name, or "from scratch"
    source: Path | None = None  # the file it was read from
    rejected: tuple[str, ...] = ()  # "unreadable: FIELD in FILE (why)": values left out, out of type or range
    max_epochs: int | None = None  # an epoch-based loop's length (its max_iters is then None)
    by_epoch: bool = False  # the loop counts epochs: so do max_epochs and val_interval
    # checkpoint_interval counts epochs: the hook's own by_epoch (mmengine's CheckpointHook: True unless it says
    # False, whatever the loop; mmcv's: the runner's unit unless it says), not the loop's
    checkpoint_by_epoch: bool = False
    # (field, why): each table field left None, and what was looked for ("no train_cfg.max_iters in config.py");
    # an explanation of the fields above, not a field of the recipe: two configs that say the same are equal
    missing: tuple[tuple[str, str], ...] = field(default=(), compare=False)


def at(values: object, *path: str) -> object:
    for key in path:
        values = values.get(key, UNKNOWN) if isinstance(values, dict) else UNKNOWN
    return values


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _crop(value: object, check: Callable[[str, object], Any] | None = None) -> tuple[int, int] | None:
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(_int(v) for v in value)):
        return None
    sides = (value[0], value[1]) if check is None else (check("crop", value[0]), check("crop", value[1]))
    return sides if sides[0] is not None and sides[1] is not None else None


def _evaluation(test_cfg: object, check: Callable[[str, object], Any]) -> str | None:
    mode = at(test_cfg, "mode")
    if mode == "whole":
        return "whole image"
    window, stride = _crop(at(test_cfg, "crop_size"), check), _crop(at(test_cfg, "stride"), check)
    if mode == "slide" and window and stride:
        return f"sliding window {window[0]}×{window[1]}, stride {stride[0]}×{stride[1]}"
    return None


def init_of(values: dict[str, object]) -> str | None:
    """Where the weights start: prove's model.py names it in ``pretrained``; a dump in the model dict."""
    found = values.get("pretrained", UNKNOWN)
    if found is UNKNOWN:
        model = values.get("model")
        found = at(model, "pretrained")
        if found is UNKNOWN or found is None:
            found = at(model, "backbone", "init_cfg", "checkpoint")
            if at(model, "backbone", "init_cfg") is None:
                found = None if found is UNKNOWN else found
    if found is None or found is False:
        return "from scratch"
    return Path(found).name if isinstance(found, str) else None


def _first(values: dict[str, object], *paths: tuple[str, ...]) -> tuple[object, str]:
    """The first of ``paths`` the config binds, and its dotted name (the first path's when none is bound)."""
    for path in paths:
        found = at(values, *path)
        if found is not UNKNOWN:
            return found, ".".join(path)
    return UNKNOWN, ".".join(paths[0])


_LEGACY_KEYS = ("runner", "data", "total_iters", "lr_config", "checkpoint_config", "evaluation")


def is_legacy(values: dict[str, object]) -> bool:
    """An mmseg 0.x (mmcv) config: its recipe is in ``runner``/``data``/``optimizer``..., not in ``train_cfg``."""
    return "train_cfg" not in values and any(key in values for key in _LEGACY_KEYS)


def trained(values: dict[str, object], source: Path, gpus: Callable[[], int | None]) -> TrainedConfig:
    """The recipe in a config's ``values`` (read from ``source``); ``gpus``: the world size its log reports."""
    from dataclasses import replace

    check = Checker(source)
    legacy = is_legacy(values)
    looked: dict[str, str] = {}  # field -> the key it was looked for under
    loop = values.get("runner") if legacy else values.get("train_cfg")
    by_epoch = "Epoch" in str(at(loop, "type")) or at(loop, "max_epochs") is not UNKNOWN
    if by_epoch:
        iters: object = UNKNOWN
        epochs, looked["max_iters"] = at(loop, "max_epochs"), ("runner" if legacy else "train_cfg") + ".max_epochs"
    else:
        iters, looked["max_iters"] = (_first(values, ("runner", "max_iters"), ("total_iters",)) if legacy
                                      else _first(values, ("train_cfg", "max_iters")))
        epochs = UNKNOWN
    if legacy:
        per_gpu_value, looked["batch_size"] = _first(values, ("data", "samples_per_gpu"))
        pipeline = at(values, "data", "train", "pipeline")
        optimizer = values.get("optimizer")
        lr_config = values.get("lr_config")
        policy = at(lr_config, "policy")
        scheduler = check("scheduler", policy if not isinstance(policy, str) or not policy.islower()
                          else policy.capitalize())
        warmup = (check("warmup", at(lr_config, "warmup_iters")) if at(lr_config, "warmup") not in (None, UNKNOWN)
                  else 0 if isinstance(lr_config, dict) else None)
        val, looked["val_interval"] = _first(values, ("evaluation", "interval"))
        ckpt, looked["checkpoint_interval"] = _first(values, ("checkpoint_config", "interval"))
        # mmcv's IterBasedRunner sets the hook's by_epoch to False unless the config says; its default is True
        hook_by_epoch = at(values, "checkpoint_config", "by_epoch")
        ckpt_by_epoch = hook_by_epoch if isinstance(hook_by_epoch, bool) else by_epoch
        looked.update(optimizer="optimizer.type", lr="optimizer.lr", warmup="lr_config", scheduler="lr_config.policy")
    else:
        per_gpu_value, looked["batch_size"] = _first(values, ("train_dataloader", "batch_size"))
        pipeline = at(values, "train_dataloader", "dataset", "pipeline")
        optimizer = at(values, "optim_wrapper", "optimizer")
        schedulers = values.get("param_scheduler")
        steps = [schedulers] if isinstance(schedulers, dict) else schedulers if isinstance(schedulers, list) else None
        types = [check("scheduler", at(s, "type")) for s in steps or ()]
        warmups = [check("warmup", at(s, "end")) for s in steps or () if at(s, "type") == "LinearLR"]
        every_type = steps is not None and None not in types
        warmup = warmups[0] if warmups else (0 if every_type else None)
        scheduler = "Poly" if "PolyLR" in types else (types[-1] if every_type and types else None)
        val, looked["val_interval"] = _first(values, ("train_cfg", "val_interval"))
        ckpt, looked["checkpoint_interval"] = _first(values, ("default_hooks", "checkpoint", "interval"))
        hook_by_epoch = at(values, "default_hooks", "checkpoint", "by_epoch")  # mmengine's default: True
        ckpt_by_epoch = hook_by_epoch if isinstance(hook_by_epoch, bool) else True
        looked.update(optimizer="optim_wrapper.optimizer.type", lr="optim_wrapper.optimizer.lr",
                      warmup="param_scheduler", scheduler="param_scheduler")
    # The crop the training pipeline applies; the top-level crop_size mmseg configs also define otherwise.
    crops = [_crop(at(step, "crop_size"), check) for step in (pipeline if isinstance(pipeline, list) else [])
             if at(step, "type") == "RandomCrop"]
    looked["crop_size"] = ("data.train" if legacy else "train_dataloader.dataset") + ".pipeline RandomCrop"
    per_gpu = check("batch_size", per_gpu_value)
    total = check("batch_size", values.get("total_batch_size"))
    if total is None and per_gpu is not None and (world := gpus()) is not None:
        total = check("batch_size", per_gpu * world)
    found = TrainedConfig(
        max_iters=check("max_iters", iters),
        max_epochs=check("max_epochs", epochs),
        by_epoch=by_epoch,
        batch_size=per_gpu if total is None else total,
        batch_is_per_gpu=total is None and per_gpu is not None,
        crop_size=crops[0] if crops else _crop(values.get("crop_size"), check),
        optimizer=check("optimizer", at(optimizer, "type")),
        lr=check("lr", at(optimizer, "lr")),
        warmup=warmup,
        scheduler=scheduler,
        val_interval=check("val_interval", val),
        checkpoint_interval=(interval := check("checkpoint_interval", ckpt)),
        checkpoint_by_epoch=by_epoch if interval is None else ckpt_by_epoch,
        seed=check("seed", at(values, "randomness", "seed")),
        evaluation=_evaluation(at(values, "model", "test_cfg"), check),
        sync_bn=None if values.get("sync_bn", UNKNOWN) is UNKNOWN else bool(values.get("sync_bn")),
        init=check("init", init_of(values)) if source.parent.name != CONFIG_DIR else None,
        source=source,
        rejected=tuple(check.rejected.values()),
    )
    name = source.name if source.parent.name != CONFIG_DIR else f"{CONFIG_DIR}/{source.name}"
    base = " (nor in what it names in _base_: those files are not read)" if "_base_" in values else ""
    missing = []
    for name_, key in looked.items():
        value = found.max_epochs if name_ == "max_iters" and by_epoch else getattr(found, name_)
        if value is None:
            missing.append((name_, f"{FIELD_NAMES[name_]}: no {key} in {name}{base}"))
    return replace(found, missing=tuple(missing))


# Each field of the configuration table as a note names it.
FIELD_NAMES = {"max_iters": "iterations", "batch_size": "batch size", "crop_size": "crop size",
               "optimizer": "optimizer", "lr": "lr", "warmup": "warmup", "scheduler": "LR scheduler",
               "val_interval": "val interval", "checkpoint_interval": "checkpoint interval"}
