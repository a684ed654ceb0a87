# FCN on HRNetV2-W48, on mmseg's Cityscapes config. Trained from scratch unless
# `pretrained` names a local checkpoint (nothing is ever downloaded), e.g.
# pretrained = '/models/hrnetv2_w48-d2186c55.pth'  (mmseg's 'open-mmlab://msra/hrnetv2_w48')
pretrained = None
prove_family = 'cnn'
_base_ = ['mmseg::hrnet/fcn_hr48_4xb2-80k_cityscapes-512x1024.py']

norm_cfg = dict(type='BN', requires_grad=True)  # one process per job: no SyncBN
model = dict(
    pretrained=pretrained,
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg, num_classes=19),
)
