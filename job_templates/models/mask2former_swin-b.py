# Mask2Former, Swin-B (ImageNet-22k 384 layout), on mmseg's 90k Cityscapes config. Needs mmdet
# 3.x and full mmcv with compiled ops (MMCV_FLAVOUR=full); without mmdet it fails to build with
# a misleading "BaseModule.__init__() got an unexpected keyword argument 'in_channels'".
# Trained from scratch unless `pretrained` names a local checkpoint (nothing is downloaded), e.g.
# pretrained = '/models/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth'
pretrained = None
prove_family = 'transformer'
_base_ = ['mmseg::mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-90k_cityscapes-512x1024.py']

# The Swin backbone and the pixel decoder use LN/GN: no SyncBN to replace. 19 classes already.
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(num_classes=19),
)
