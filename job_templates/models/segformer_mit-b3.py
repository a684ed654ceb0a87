# SegFormer, MiT-B3 (embed_dims 64, layers [3, 4, 18, 3]), on mmseg's Cityscapes config (mmseg 1.2.2
# ships the b3 Cityscapes config; it is b0's with the b3 backbone), from the ImageNet MiT-B3 it names.
# The weights are fetched once into the sweep's weight cache (docs/weights.md); the job loads that file.
# `pretrained = False` trains from scratch (plan and the report then say so).
pretrained = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b3_20220624-13b1141c.pth'
prove_family = 'transformer'
# How mmseg published it: the MODEL_ZOO variant trains this (tests/test_templates.py checks it against the config).
# Its sliding-window inference (1024, stride 768) is the zoo's; a sweep evaluates every model one way ([evaluation]).
prove_zoo = dict(config='segformer_mit-b3_8xb1-160k_cityscapes-1024x1024', max_iters=160000, gpus=8,
                 batch_per_gpu=1, crop_size=(1024, 1024), optimizer='AdamW', lr=6e-05, warmup_iters=1500,
                 scheduler='Poly, power 1', val_interval=16000)
_base_ = ['mmseg::segformer/segformer_mit-b3_8xb1-160k_cityscapes-1024x1024.py']

# BN here; across several GPUs the run layer sets mmengine's sync_bn, which makes it the zoo's SyncBN.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        embed_dims=64,
        num_layers=[3, 4, 18, 3],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None,
    ),
    decode_head=dict(
        in_channels=[64, 128, 320, 512],
        norm_cfg=norm_cfg,
        num_classes=19,
    ),
)
