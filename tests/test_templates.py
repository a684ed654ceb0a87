"""Every model template, rendered by prove-jobs itself (``render_run`` + ``write_rendered``, what
``submit`` writes into a run dir), loads with the variant's numbers; the ones this environment can
build, build. ``prove-jobs render`` (the command) is tested in tests/test_newcomer.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from conftest import TEMPLATES

pytest.importorskip("mmengine", reason="loading configs needs the train extra (mmengine, mmsegmentation)")
pytest.importorskip("mmseg", reason="loading configs needs the train extra (mmengine, mmsegmentation)")

MODELS = sorted(p.stem for p in (TEMPLATES / "models").glob("*.py"))
NEEDS_MMDET = {"mask2former_swin-b"}
SWEEP = """
name = "templates"
dataset = "cityscapes"
data_root = "{root}"
dataset_root = "/data/cityscapes"
crop_size = [512, 512]
templates = "{templates}"
models = ["{model}"]
variants = ["{variant}"]

[training]
log_interval = 50
num_workers = {num_workers}
seed = 0
"""


def load(model: str, tmp_path: Path, *, variant: str = "WEIGHTS_CITYSCAPES", num_workers: int = 4,
         templates: Path = TEMPLATES) -> Any:
    """The config prove-jobs renders for ``model`` x ``variant`` (20k iterations at batch 16, LR 0.08), loaded."""
    from mmengine.config import Config

    from prove_jobs import _mmcv_shim
    from prove_jobs.render import render_run, write_rendered
    from prove_jobs.spec import load_sweep

    sweep_file = tmp_path / f"{model}.toml"
    sweep_file.write_text(SWEEP.format(root=tmp_path / "runs", templates=templates, model=model, variant=variant,
                                       num_workers=num_workers))
    sweep = load_sweep(sweep_file)
    [run] = sweep.runs()
    config = write_rendered(render_run(sweep, run))
    _mmcv_shim.install()  # also lets mmengine resolve 'mmseg::' bases without pkg_resources
    return Config.fromfile(str(config))


def test_all_models_present() -> None:
    assert {"pspnet_r50", "deeplabv3plus_r50", "hrnet_hr48", "segformer_mit-b3", "segnext_mscan-b"} <= set(MODELS)
    assert {"mask2former_swin-b", "demo_segformer_tiny", "demo_fcn_r18_tiny"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_variant_applied(model: str, tmp_path: Path) -> None:
    cfg = load(model, tmp_path)
    assert cfg.prove_family in ("cnn", "transformer")
    assert cfg.train_cfg.type == "IterBasedTrainLoop"
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (20000, 2000)
    assert cfg.train_dataloader.batch_size == 16 and cfg.val_dataloader.batch_size == 1
    assert cfg.optim_wrapper.optimizer.to_dict() == dict(type="SGD", lr=0.08, momentum=0.9, weight_decay=0.0005)
    assert "paramwise_cfg" not in cfg.optim_wrapper
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ("LinearLR", 0, 500)
    assert (poly.type, poly.begin, poly.end, poly.power, poly.eta_min) == ("PolyLR", 500, 20000, 0.9, 1e-4)
    assert cfg.default_hooks.checkpoint.interval == 2000 and cfg.default_hooks.checkpoint.by_epoch is False
    assert cfg.default_hooks.logger.interval == 50 and cfg.default_hooks.logger.log_metric_by_epoch is False
    crop = [step for step in cfg.train_dataloader.dataset.pipeline if step.type == "RandomCrop"]
    assert [tuple(step.crop_size) for step in crop] == [(512, 512)]
    assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.type == "CityscapesDataset" and loader.dataset.data_root == "/data/cityscapes"
        assert loader.num_workers == 4 and loader.persistent_workers is True
    assert cfg.model.decode_head.num_classes == 19
    assert "SyncBN" not in str(cfg.model.to_dict())
    assert "_delete_" not in cfg.pretty_text and "reduce_zero_label" not in cfg.pretty_text
    assert [b.type for b in cfg.visualizer.vis_backends] == ["LocalVisBackend"]
    assert cfg.randomness.seed == 0
    # never downloads weights unless a model file names a local checkpoint
    assert "http" not in str(cfg.model.to_dict()) and "open-mmlab://" not in str(cfg.model.to_dict())


def test_no_warmup_and_no_workers(tmp_path: Path, templates_copy: Path) -> None:
    (templates_copy / "variants" / "NO_WARMUP.toml").write_text(
        "max_iters = 20000\nbatch_size = 16\nlr = 0.08\nwarmup_iters = 0\nval_interval = 2000\n")
    cfg = load("demo_fcn_r18_tiny", tmp_path, variant="NO_WARMUP", num_workers=0, templates=templates_copy)
    assert [s.type for s in cfg.param_scheduler] == ["PolyLR"]
    assert cfg.train_dataloader.persistent_workers is False


def _build_param(model: str) -> Any:
    """Mask2Former is marked ``full`` (`make test-full` builds it in .venv-full); elsewhere it skips, saying why."""
    if model not in NEEDS_MMDET:
        return model
    missing = [name for name, module in (("mmdet", "mmdet"), ("compiled mmcv ops", "mmcv._ext"))
               if importlib.util.find_spec(module) is None]
    # without mmdet mmseg falls back to a base class: "BaseModule.__init__() got an unexpected keyword argument"
    reason = (f"Mask2Former needs mmdet 3.3.0 and full mmcv (missing: {', '.join(missing)}); "
              "`make test-full` builds .venv-full and runs it")
    return pytest.param(model, marks=[pytest.mark.full, pytest.mark.skipif(bool(missing), reason=reason)])


@pytest.mark.slow
@pytest.mark.parametrize("model", [_build_param(m) for m in MODELS])
def test_model_builds(model: str, tmp_path: Path) -> None:
    from mmseg.registry import MODELS as REGISTRY
    from mmseg.utils import register_all_modules

    cfg = load(model, tmp_path)
    register_all_modules(init_default_scope=True)
    assert REGISTRY.build(cfg.model) is not None
