# Mask R-CNN + FPN on the Fashion-MNIST scenes (benchmark.data.scenes: 64 px canvases of 2-5 items of 10
# classes, COCO instances): the miniature's detection leg (Fig. 1 and Table 4 in miniature).
#
# The smoke config's narrow heads and CPU settings at the scenes' own size. The backbone keeps the
# pre-training's img_size (32 px at the mini scale) and interpolates its position embedding to the
# 64 px canvas (ViTPyramid: dynamic_img_size). Lengths (epochs, the number of train scenes) come from the
# plan's cfg_options (the mini scales' detect entries, benchmark/experiments/scales.py).
_base_ = './mask_rcnn_vit_fpn_smoke.py'

image_size = (64, 64)
# The miniature's encoder (a checkpoint names its own; random init takes these, as the plan also says).
# A scene holds at most 5 items: far fewer proposals, sampled RoIs and kept detections than COCO's
# (the mask head on every sampled positive dominated a CPU step: 4 s for 8 scenes with the smoke's).
model = dict(
    backbone=dict(arch='vit-mini', img_size=32),
    roi_head=dict(mask_head=dict(num_convs=2)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=50), rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50), rcnn=dict(max_per_img=20)))
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# lr chosen on a held-out selection split (the last 400 train scenes), SplitMask's encoder, 2 epochs of
# 1,000 scenes: box AP 7.0 / 9.3 / 10.2 / 2.6 at 1e-4 / 3e-4 / 1e-3 / 3e-3 (docs/mini.md).
optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_dataloader = dict(batch_size=8, dataset=dict(filter_cfg=dict(min_size=4), pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
default_hooks = dict(logger=dict(type='LoggerHook', interval=50))
log_processor = dict(window_size=50)
