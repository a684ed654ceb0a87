# SegNeXt, MSCAN-B. mmseg ships it only for ADE20K: the head is switched to the 19 Cityscapes
# classes and the data to Cityscapes (the run layer replaces the dataloaders as well). Starts from the
# ImageNet MSCAN-B that config names, fetched once into the sweep's weight cache (docs/weights.md).
# `pretrained = False` trains from scratch (plan and the report then say so).
pretrained = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_b_20230227-3ab7d230.pth'
prove_family = 'transformer'
# How mmseg published it (for ADE20K: there is no Cityscapes SegNeXt config): the MODEL_ZOO variant trains
# this (tests/test_templates.py checks it against the config). The decode head uses GN: no BN to sync.
prove_zoo = dict(config='segnext_mscan-b_1xb16-adamw-160k_ade20k-512x512', max_iters=160000, gpus=1,
                 batch_per_gpu=16, crop_size=(512, 512), optimizer='AdamW', lr=6e-05, warmup_iters=1500,
                 scheduler='Poly, power 1', val_interval=16000)
_base_ = ['mmseg::segnext/segnext_mscan-b_1xb16-adamw-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(num_classes=19),
)

dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
# No reduce_zero_label (ADE20K's): Cityscapes train ids start at 0 and 255 is ignored.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        pipeline=train_pipeline,
    )
)
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline,
    )
)
test_dataloader = val_dataloader
