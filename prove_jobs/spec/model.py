"""What a model template says about itself: its family, whether its BN needs two images, its model-zoo recipe.

A model template is an mmengine config; prove-jobs reads only its top-level ``prove_*`` literals, with
``ast`` (nothing is imported or executed), so that planning and checking a sweep need no mmengine.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prove_jobs.errors import SpecError

FAMILIES = ("cnn", "transformer", "other")
ZOO_KEYS = {"config", "max_iters", "gpus", "batch_per_gpu", "crop_size", "optimizer", "lr", "warmup_iters",
            "scheduler", "val_interval", "base_batch_size"}


@dataclass(frozen=True)
class ZooRecipe:
    """How mmseg published a model (its config's ``<gpus>xb<batch>-<iters>`` name and contents).

    ``tests/test_templates.py`` checks each shipped template's recipe against the mmseg config it
    names, so that the MODEL_ZOO variant trains what the model zoo trained, not what a template says.
    """

    config: str  # the mmseg config the numbers come from, e.g. 'segformer_mit-b3_8xb1-160k_cityscapes-1024x1024'
    max_iters: int
    gpus: int
    batch_per_gpu: int
    crop_size: tuple[int, int]
    optimizer: str  # 'SGD', 'AdamW'
    lr: float
    warmup_iters: int
    scheduler: str  # 'Poly(0.9)'
    val_interval: int
    base_batch_size: int  # what the zoo's LR was tuned for: auto_scale_lr.base_batch_size, else gpus x batch

    @property
    def batch_size(self) -> int:
        return self.gpus * self.batch_per_gpu


@dataclass(frozen=True)
class ModelFacts:
    """A model template's ``prove_*`` declarations."""

    name: str
    family: str = "other"
    # BN after a 1x1 pooling (PSPNet's pyramid pooling, DeepLabV3+'s image pooling): a BN that sees one
    # image there fails at the first step ("Expected more than 1 value per channel when training").
    pooled_bn: bool = False
    zoo: ZooRecipe | None = None


def read_model_facts(path: Path) -> ModelFacts:
    """``prove_family``, ``prove_pooled_bn`` and ``prove_zoo`` of the template at ``path``."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(path, None, f"cannot read model template ({exc})") from None
    except SyntaxError as exc:
        raise SpecError(path, None, f"not valid Python (line {exc.lineno}: {exc.msg})") from None
    values: dict[str, Any] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("prove_")):
            try:
                values[node.targets[0].id] = _literal(node.value)
            except ValueError:
                raise SpecError(path, node.targets[0].id, "must be a literal (a string, number, bool or "
                                "dict(...) of them)") from None
    family = values.get("prove_family", "other")
    if family not in FAMILIES:
        raise SpecError(path, "prove_family", f"must be one of {', '.join(FAMILIES)}, got {family!r}")
    pooled = values.get("prove_pooled_bn", False)
    if not isinstance(pooled, bool):
        raise SpecError(path, "prove_pooled_bn", f"must be True or False, got {pooled!r}")
    zoo = _zoo(path, values["prove_zoo"]) if "prove_zoo" in values else None
    return ModelFacts(name=path.stem, family=family, pooled_bn=pooled, zoo=zoo)


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval``, plus ``dict(key=literal, ...)`` as mmengine configs write it."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
            and not node.args and all(k.arg for k in node.keywords)):
        return {k.arg: _literal(k.value) for k in node.keywords}
    return ast.literal_eval(node)


def _zoo(path: Path, raw: Any) -> ZooRecipe:
    where = "prove_zoo"
    if not isinstance(raw, dict):
        raise SpecError(path, where, "must be dict(config=..., max_iters=..., gpus=..., ...)")
    missing = sorted(ZOO_KEYS - set(raw) - {"base_batch_size"})
    unknown = sorted(set(raw) - ZOO_KEYS)
    if missing or unknown:
        problem = f"missing {', '.join(missing)}" if missing else f"unknown key {unknown[0]}"
        raise SpecError(path, where, f"{problem} (keys: {', '.join(sorted(ZOO_KEYS))})")
    for key in ("max_iters", "gpus", "batch_per_gpu", "val_interval"):
        if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] <= 0:
            raise SpecError(path, f"{where}.{key}", f"must be a positive integer, got {raw[key]!r}")
    crop = raw["crop_size"]
    if not (isinstance(crop, tuple | list) and len(crop) == 2 and all(isinstance(c, int) and c > 0 for c in crop)):
        raise SpecError(path, f"{where}.crop_size", f"must be (height, width), got {crop!r}")
    if not isinstance(raw["lr"], int | float) or raw["lr"] <= 0:
        raise SpecError(path, f"{where}.lr", f"must be a positive number, got {raw['lr']!r}")
    base = raw.get("base_batch_size", raw["gpus"] * raw["batch_per_gpu"])
    return ZooRecipe(config=str(raw["config"]), max_iters=raw["max_iters"], gpus=raw["gpus"],
                     batch_per_gpu=raw["batch_per_gpu"], crop_size=(crop[0], crop[1]),
                     optimizer=str(raw["optimizer"]), lr=float(raw["lr"]), warmup_iters=int(raw["warmup_iters"]),
                     scheduler=str(raw["scheduler"]), val_interval=raw["val_interval"], base_batch_size=int(base))
