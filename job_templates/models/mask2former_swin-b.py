# Mask2Former, Swin-B (ImageNet-22k 384 layout), on mmseg's 90k Cityscapes config. Needs mmdet
# 3.x and full mmcv with compiled ops (MMCV_FLAVOUR=full); without mmdet it fails to build with
# a misleading "BaseModule.__init__() got an unexpected keyword argument 'in_channels'".
# Starts from the ImageNet-22k Swin-B that config names, fetched once into the sweep's weight cache
# (docs/weights.md). `pretrained = False` trains from scratch (plan and the report then say so).
pretrained = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth'
prove_family = 'transformer'
# How mmseg published it: the MODEL_ZOO variant trains this (tests/test_templates.py checks it against the config).
# auto_scale_lr.base_batch_size = 16: the batch its AdamW LR was tuned for.
prove_zoo = dict(config='mask2former_swin-b-in22k-384x384-pre_8xb2-90k_cityscapes-512x1024', max_iters=90000,
                 gpus=8, batch_per_gpu=2, crop_size=(512, 1024), optimizer='AdamW', lr=0.0001, warmup_iters=0,
                 scheduler='Poly', val_interval=5000, base_batch_size=16)
_base_ = ['mmseg::mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-90k_cityscapes-512x1024.py']

# The Swin backbone and the pixel decoder use LN/GN: no SyncBN to replace. 19 classes already.
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(num_classes=19),
)
