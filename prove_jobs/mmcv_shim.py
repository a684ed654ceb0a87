"""Make mmsegmentation importable on mmcv-lite, and mmengine's ``pkg::`` config bases on new setuptools.

1. mmcv-lite ships no compiled ``mmcv._ext``, yet ``import mmseg.models`` runs
   ``from mmcv.ops import point_sample`` (``mmseg/utils/mask_classification.py``) and
   ``from mmcv.ops import sigmoid_focal_loss`` (``mmseg/models/losses/focal_loss.py``), and
   ``mmcv/ops/__init__.py`` loads the extension. We register a stand-in ``mmcv.ops`` that never
   runs that ``__init__``: it exposes the pure-Python ``point_sample`` and, for any other name,
   a placeholder that raises :class:`CompiledOpUnavailable` when called or instantiated. The
   placeholder (not an error at attribute access) is needed because focal_loss imports its op
   at module level; the models we train never call it.
2. mmengine 0.10.7 resolves ``_base_ = ['mmseg::...']`` through ``pkg_resources``, which
   setuptools >= 81 no longer ships. We swap in importlib-based lookups when it is missing.

Both are no-ops where not needed (full mmcv with ops; setuptools with ``pkg_resources``) and
idempotent. Standard library only at import time: this module loads on the login node too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from typing import Any, NoReturn

_MARK = "__prove_jobs_shim__"
_POINT_SAMPLE = "point_sample"


class CompiledOpUnavailable(ModuleNotFoundError):
    """A compiled mmcv op was used with mmcv-lite.

    A ``ModuleNotFoundError`` because that is what mmcv-lite raises without the shim, and what
    mmseg's guarded imports (``try: from mmcv.ops import PSAMask except ModuleNotFoundError``) expect.
    """


def install() -> None:
    """Apply both fixes where needed. Safe to call any number of times, from any process."""
    install_mmcv_ops()
    install_mmengine_package_lookup()


def install_mmcv_ops() -> None:
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return  # the real mmcv.ops (full mmcv) or our stand-in is already there
    if _has_compiled_ops():
        return
    spec = importlib.util.find_spec("mmcv")
    if spec is None or not spec.submodule_search_locations:
        return  # no mmcv at all: importing mmseg fails on its own, with its own message
    import mmcv

    ops = types.ModuleType("mmcv.ops", "Stand-in for mmcv.ops on mmcv-lite (registered by prove_jobs).")
    # A real __path__ lets `import mmcv.ops.point_sample` load that pure-Python file, and makes
    # `from mmcv.ops.<compiled op> import X` fail with mmcv's own ModuleNotFoundError('mmcv._ext').
    ops.__path__ = [os.path.join(folder, "ops") for folder in spec.submodule_search_locations]
    ops.__package__ = "mmcv.ops"
    setattr(ops, _MARK, True)
    ops.__getattr__ = _missing_op  # type: ignore[method-assign]  # PEP 562 module __getattr__
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops
    setattr(ops, _POINT_SAMPLE, _load_point_sample())


def _has_compiled_ops() -> bool:
    try:
        importlib.import_module("mmcv._ext")
    except ImportError:
        return False
    return True


def _load_point_sample() -> Callable[..., Any]:
    try:
        module = importlib.import_module("mmcv.ops.point_sample")
        function: Callable[..., Any] = module.point_sample
        return function
    except Exception:  # a future mmcv may make that file need _ext: fall back to our own
        return _torch_point_sample


def _torch_point_sample(input: Any, points: Any, align_corners: bool = False, **kwargs: Any) -> Any:
    """mmcv's ``point_sample``: ``grid_sample`` at points given in [0, 1] x [0, 1]."""
    import torch.nn.functional as F

    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def _missing_op(name: str) -> type:
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(f"module 'mmcv.ops' has no attribute {name!r}")

    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise CompiledOpUnavailable(
            f"mmcv.ops.{name} is a compiled op and this environment has mmcv-lite (no mmcv._ext); "
            "reinstall the training stack with full mmcv (MMCV_FLAVOUR=full)",
            name="mmcv._ext",
        )

    # A class, so that both `op(...)` and `isinstance(x, Op)` work (the latter is simply False).
    placeholder = type(name, (), {"__new__": refuse, "__module__": "mmcv.ops", "__doc__": "compiled op, unavailable"})
    return placeholder


def install_mmengine_package_lookup() -> None:
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    try:
        from mmengine.config import config as mmengine_config
    except ImportError:
        return
    if getattr(mmengine_config, _MARK, False):
        return
    mmengine_config.is_installed = _is_installed
    mmengine_config.get_installed_path = _installed_path
    setattr(mmengine_config, _MARK, True)


def _is_installed(package: str) -> bool:
    try:
        _installed_path(package)
    except ModuleNotFoundError:
        return False
    return True


def _installed_path(package: str) -> str:
    """Folder of an installed distribution's top-level module (``mmsegmentation`` -> ``.../mmseg``)."""
    import importlib.metadata

    try:
        top_level = importlib.metadata.distribution(package).read_text("top_level.txt") or ""
        module = top_level.split()[0] if top_level.split() else package
    except importlib.metadata.PackageNotFoundError:
        module = package  # mmengine also accepts a module name found on sys.path
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{package} is not installed", name=package)
    return os.path.dirname(spec.origin)
