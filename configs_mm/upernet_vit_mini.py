# UperNet (+ FCN auxiliary head) on the Fashion-MNIST scenes (benchmark.data.scenes: 64 px canvases, the
# ADE20k layout, 0 = background, c + 1 = class c): the miniature's segmentation leg (Table 5 in miniature).
#
# The smoke config's narrow heads and CPU settings at the scenes' own size: whole 64 px canvases, no
# rescaling (the items are 20-40 px). The backbone interpolates its position embedding to the
# canvas (ViTPyramid: dynamic_img_size). Lengths come from the plan's cfg_options
# (the mini scales' segment entries, benchmark/experiments/scales.py).
_base_ = './upernet_vit_smoke.py'

crop_size = (64, 64)
# The miniature's encoder (a checkpoint names its own; random init takes these, as the plan also says).
model = dict(backbone=dict(arch='vit-mini', img_size=32), data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomCrop', crop_size=crop_size),  # the whole canvas (it names the training size for the estimates)
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# lr chosen on a held-out selection split (the last 400 train scenes), SplitMask's encoder, 300 steps on
# 1,000 scenes: mIoU 18.0 / 18.7 / 15.3 at 1e-3 / 3e-3 / 1e-2 (the smoke's 1e-4: loss flat; docs/mini.md).
optim_wrapper = dict(optimizer=dict(lr=3e-3))
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
default_hooks = dict(logger=dict(interval=50))
log_processor = dict(window_size=50)
