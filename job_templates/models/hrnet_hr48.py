# FCN on HRNetV2-W48, on mmseg's Cityscapes config, from the ImageNet HRNetV2-W48 it names. The
# weights are fetched once into the sweep's weight cache (docs/weights.md); the job loads that file.
# `pretrained = False` trains from scratch (plan and the report then say so).
pretrained = 'open-mmlab://msra/hrnetv2_w48'
prove_family = 'cnn'
# How mmseg published it: the MODEL_ZOO variant trains this (tests/test_templates.py checks it against the config).
prove_zoo = dict(config='fcn_hr48_4xb2-80k_cityscapes-512x1024', max_iters=80000, gpus=4, batch_per_gpu=2,
                 crop_size=(512, 1024), optimizer='SGD', lr=0.01, warmup_iters=0, scheduler='Poly',
                 val_interval=8000)
_base_ = ['mmseg::hrnet/fcn_hr48_4xb2-80k_cityscapes-512x1024.py']

# BN here; across several GPUs the run layer sets mmengine's sync_bn, which makes it the zoo's SyncBN.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=pretrained,
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg, num_classes=19),
)
