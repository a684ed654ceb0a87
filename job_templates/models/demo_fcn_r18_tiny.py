# A toy FCN for the demo sweep: ResNet-18-D8 (V1c stem) at half the widths (channels 32..256,
# about 3 M parameters); trains 40 iterations in about 5 s on a CPU. Never pretrained: it trains
# from scratch, and plan and the report say so.
# (A quarter of the widths trains as fast but stays at chance for the demo's 40 iterations.)
pretrained = False
prove_family = 'cnn'
_base_ = ['mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py']

norm_cfg = dict(type='BN', requires_grad=True)  # the run layer's sync_bn makes it SyncBN across GPUs
model = dict(
    pretrained=None,
    backbone=dict(stem_channels=32, base_channels=32, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=256, channels=64, norm_cfg=norm_cfg, num_classes=19),
    auxiliary_head=dict(in_channels=128, channels=32, norm_cfg=norm_cfg, num_classes=19),
    test_cfg=dict(mode='whole'),
)
