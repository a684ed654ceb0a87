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
{extra}
"""
# The checkpoint each shipped model starts from: what its mmseg base config names (open-mmlab:// names
# through mmengine's table), as the file name the weight cache keeps it under.
ZOO_CHECKPOINTS = {
    "pspnet_r50": "resnet50_v1c-2cccc1ad.pth",
    "deeplabv3plus_r50": "resnet50_v1c-2cccc1ad.pth",
    "hrnet_hr48": "hrnetv2_w48-d2186c55.pth",
    "segformer_mit-b3": "mit_b3_20220624-13b1141c.pth",
    "segnext_mscan-b": "mscan_b_20230227-3ab7d230.pth",
    "mask2former_swin-b": "swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth",
}


def load(model: str, tmp_path: Path, *, variant: str = "WEIGHTS_CITYSCAPES", num_workers: int = 4,
         templates: Path = TEMPLATES, extra: str = "") -> Any:
    """The config prove-jobs renders for ``model`` x ``variant`` (20k iterations at batch 16, LR 0.08), loaded."""
    from mmengine.config import Config

    from prove_jobs import mmcv_shim
    from prove_jobs.render import render_run, write_rendered
    from prove_jobs.spec import load_sweep

    tmp_path.mkdir(parents=True, exist_ok=True)
    sweep_file = tmp_path / f"{model}.toml"
    sweep_file.write_text(SWEEP.format(root=tmp_path / "runs", templates=templates, model=model, variant=variant,
                                       num_workers=num_workers, extra=extra))
    sweep = load_sweep(sweep_file)
    [run] = sweep.runs()
    config = write_rendered(render_run(sweep, run))
    mmcv_shim.install()  # also lets mmengine resolve 'mmseg::' bases without pkg_resources
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
    # one GPU: plain BN, and mmengine's sync_bn off (tests below: SyncBN across several GPUs)
    assert "SyncBN" not in str(cfg.model.to_dict()) and cfg.sync_bn is None
    # one evaluation protocol for every model: the sweep's (whole image by default), not SegFormer's own slide
    assert cfg.model.test_cfg.to_dict() == {"mode": "whole"}
    assert "_delete_" not in cfg.pretty_text and "reduce_zero_label" not in cfg.pretty_text
    assert [b.type for b in cfg.visualizer.vis_backends] == ["LocalVisBackend"]
    assert cfg.randomness.seed == 0
    # Starts from the checkpoint mmseg's config names (was: `pretrained = None`, every model from scratch),
    # and loads it from the weight cache: the node never downloads.
    if model.startswith("demo_"):
        assert initial_checkpoint(cfg) is None
    else:
        checkpoint = initial_checkpoint(cfg)
        assert checkpoint is not None and Path(checkpoint).name == ZOO_CHECKPOINTS[model], checkpoint
        assert "://" not in checkpoint and Path(checkpoint).is_absolute()


def initial_checkpoint(cfg: Any) -> str | None:
    """The checkpoint a config initialises from: ``model.pretrained`` (CNNs) or the backbone's ``init_cfg``."""
    init = cfg.model.backbone.get("init_cfg") or {}
    found = cfg.model.get("pretrained") or init.get("checkpoint")
    return None if found is None else str(found)


@pytest.mark.parametrize("model", ["pspnet_r50", "segformer_mit-b3", "demo_fcn_r18_tiny"])
def test_sync_bn_across_gpus(model: str, tmp_path: Path) -> None:
    """Several GPU processes: mmengine's sync_bn turns the BN layers into SyncBN; on one GPU it stays off."""
    cfg = load(model, tmp_path, extra="[resources]\ngpus_per_node = 2\n")
    assert cfg.sync_bn == "torch" and cfg.train_dataloader.batch_size == 8 and cfg.total_batch_size == 16
    cpu = load(model, tmp_path, extra="[resources]\ngpus_per_node = 0\nnodes = 2\n")
    assert cpu.sync_bn is None  # no GPUs: gloo cannot run SyncBN


def test_sliding_window_for_every_model(tmp_path: Path) -> None:
    extra = '[evaluation]\nmode = "slide"\ncrop_size = [1024, 1024]\nstride = [768, 768]\n'
    for model in ("pspnet_r50", "segformer_mit-b3"):
        cfg = load(model, tmp_path / model, extra=extra)
        assert cfg.model.test_cfg.to_dict() == {"mode": "slide", "crop_size": (1024, 1024), "stride": (768, 768)}


def test_pooled_bn_with_one_image_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PSPNet's pooled BN with one image dies at the first step ("Expected more than 1 value per channel"):
    refused when the sweep loads, naming variant, model and resources."""
    from prove_jobs.cli import main

    (tmp_path / "v").mkdir()
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP.format(root=tmp_path / "runs", templates=TEMPLATES, model="pspnet_r50",
                                  variant="CITYSCAPES_REPLICATION", num_workers=0,
                                  extra="[resources]\ngpus_per_node = 0\nnodes = 2\n"))
    assert main(["plan", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "CITYSCAPES_REPLICATION" in err and "pspnet_r50" in err and "1 image per BN" in err
    assert "nodes = 2 x gpus_per_node = 0" in err and len(err.strip().splitlines()) == 1
    # two GPUs with SyncBN: the BN sees both images, and the run is fine
    sweep.write_text(sweep.read_text().replace("gpus_per_node = 0\nnodes = 2", "gpus_per_node = 2"))
    assert main(["plan", str(sweep)]) == 0


def test_model_zoo_variant_renders_the_zoo_recipe(tmp_path: Path) -> None:
    """MMSEG_ZOO keeps SegFormer's AdamW with mmseg's per-parameter settings, schedule, iterations and crop."""
    cfg = load("segformer_mit-b3", tmp_path, variant="MMSEG_ZOO", extra="[resources]\ngpus_per_node = 4\n")
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.optimizer.lr == 6e-05
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.to_dict() == {
        "pos_block": {"decay_mult": 0.0}, "norm": {"decay_mult": 0.0}, "head": {"lr_mult": 10.0}}
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (160000, 16000)
    assert cfg.train_dataloader.batch_size == 2 and cfg.total_batch_size == 8 and cfg.sync_bn == "torch"
    crop = [step.crop_size for step in cfg.train_dataloader.dataset.pipeline if step.type == "RandomCrop"]
    assert [tuple(c) for c in crop] == [(1024, 1024)]
    assert [(s.type, s.end) for s in cfg.param_scheduler] == [("LinearLR", 1500), ("PolyLR", 160000)]
    assert cfg.train_dataloader.dataset.data_root == "/data/cityscapes"
    assert cfg.model.test_cfg.to_dict() == {"mode": "whole"}  # the sweep's protocol, as every other model
    mask2former = load("mask2former_swin-b", tmp_path / "m2f", variant="MMSEG_ZOO",
                       extra="[resources]\ngpus_per_node = 4\n")
    assert mask2former.optim_wrapper.clip_grad.to_dict() == {"max_norm": 0.01, "norm_type": 2}
    assert mask2former.optim_wrapper.optimizer.lr == 0.0001  # 16 images: the batch auto_scale_lr names


@pytest.mark.parametrize("model", [m for m in MODELS if not m.startswith("demo_")])
def test_zoo_facts_match_mmseg(model: str) -> None:
    """Each template's prove_zoo is what the mmseg config it inherits says (nothing typed by hand drifts)."""
    from mmengine.config import Config

    from prove_jobs import mmcv_shim
    from prove_jobs.spec.model import read_model_facts

    mmcv_shim.install()
    zoo = read_model_facts(TEMPLATES / "models" / f"{model}.py").zoo
    assert zoo is not None
    found = list((Path(importlib.util.find_spec("mmseg").origin).parent / ".mim" / "configs")  # type: ignore[arg-type]
                 .glob(f"*/{zoo.config}.py"))
    assert len(found) == 1 and f"_{zoo.gpus}xb{zoo.batch_per_gpu}-" in zoo.config
    assert f"mmseg::{found[0].parent.name}/{found[0].name}" in (TEMPLATES / "models" / f"{model}.py").read_text()
    cfg = Config.fromfile(str(found[0]), import_custom_modules=False)
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (zoo.max_iters, zoo.val_interval)
    assert cfg.train_dataloader.batch_size == zoo.batch_per_gpu and tuple(cfg.crop_size) == zoo.crop_size
    assert (cfg.optim_wrapper.optimizer.type, cfg.optim_wrapper.optimizer.lr) == (zoo.optimizer, zoo.lr)
    warmups = [s.end for s in cfg.param_scheduler if s.type == "LinearLR"]
    assert (warmups or [0])[0] == zoo.warmup_iters
    assert zoo.base_batch_size == (cfg.get("auto_scale_lr") or {}).get("base_batch_size", zoo.batch_size)


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
