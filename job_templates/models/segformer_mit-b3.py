# SegFormer, MiT-B3 (embed_dims 64, layers [3, 4, 18, 3]), on mmseg's Cityscapes config
# (mmseg 1.2.2 ships the b3 Cityscapes config; it is b0's with the b3 backbone). Trained from
# scratch unless `pretrained` names a local checkpoint (nothing is ever downloaded), e.g.
# pretrained = '/models/mit_b3_20220624-13b1141c.pth'
pretrained = None
prove_family = 'transformer'
_base_ = ['mmseg::segformer/segformer_mit-b3_8xb1-160k_cityscapes-1024x1024.py']

norm_cfg = dict(type='BN', requires_grad=True)  # one process per job: no SyncBN
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
