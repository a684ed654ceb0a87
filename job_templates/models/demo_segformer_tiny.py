# A toy SegFormer for the demo sweep: MiT-B0 layout with a quarter of the widths and one layer per
# stage (about 0.1 M parameters); trains in seconds on a CPU. Never pretrained: it trains from scratch, and
# plan and the report say so.
pretrained = False
prove_family = 'transformer'
_base_ = ['mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py']

norm_cfg = dict(type='BN', requires_grad=True)  # the run layer's sync_bn makes it SyncBN across GPUs
model = dict(
    backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1], init_cfg=None),
    decode_head=dict(
        in_channels=[8, 16, 40, 64],
        channels=32,
        norm_cfg=norm_cfg,
        num_classes=19,
    ),
    # the base slides a 1024 window; the demo's 128x64 images are evaluated whole
    test_cfg=dict(_delete_=True, mode='whole'),
)
