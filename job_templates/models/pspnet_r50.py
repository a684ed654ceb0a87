# PSPNet, ResNet-50-D8, on mmseg's Cityscapes config. Trained from scratch unless
# `pretrained` names a local checkpoint (nothing is ever downloaded), e.g.
# pretrained = '/models/resnet50_v1c-2cccc1ad.pth'  (mmseg's 'open-mmlab://resnet50_v1c')
pretrained = None
prove_family = 'cnn'
_base_ = ['mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py']

norm_cfg = dict(type='BN', requires_grad=True)  # one process per job: no SyncBN
model = dict(
    pretrained=pretrained,
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg, num_classes=19),
    auxiliary_head=dict(norm_cfg=norm_cfg, num_classes=19),
)
