# Mask R-CNN + FPN on a ViT feature pyramid (ViTPyramid), COCO instances: a CPU smoke config.
#
# mmengine config for mmdet 3.3. It inherits the paper-scale base (_base_mask_rcnn_vit_fpn_3x_coco.py:
# model, heads, data layout, optimiser, runtime) and overrides sizes and lengths only.
# `python -m benchmark.detect` fills in at run time:
#   - the data root (train/val dataloaders, CocoMetric ann_file),
#   - the class names from the COCO json (metainfo=dict(classes=...)) and the heads' num_classes,
#   - the backbone checkpoint, arch and img_size (from the checkpoint's model spec) and the FPN's
#     in_channels (= [embed_dim] * 4),
#   - work_dir, seed, experiment_name.
# The paper-scale configs (mask_rcnn_vit_{s,b}_fpn_3x_coco.py: 1333x800, batch 16, 3x) are far beyond CPU; this
# config keeps mmdet's standard RPN / RoI heads and only shrinks images, proposals and epochs.
_base_ = './_base_mask_rcnn_vit_fpn_3x_coco.py'

image_size = (128, 128)
embed_dim = 192  # vit-smoke / ViT-Ti width; replaced from the backbone's arch
# Head widths: mmdet's standard Mask R-CNN uses 256 (FPN, RPN, RoI) and a 1024-wide box MLP;
# the smoke config narrows them (and the RoI sample) to keep a CPU run around a minute.
width = 128
box_fc = 256

model = dict(
    # norm_cfg stays the base's SyncBN in the pyramid: BN outside torch.distributed
    backbone=dict(
        arch='vit-smoke',  # replaced by the checkpoint's arch when one is given
        out_indices=None),  # evenly spaced, ending at the last block
    neck=dict(in_channels=[embed_dim] * 4, out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=box_fc),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

# ---------------------------------------------------------------- data
ms_scales = None  # the base's multi-scale helper; unused here (single-scale pipeline)
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
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(filter_cfg=dict(min_size=8), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# ---------------------------------------------------------------- schedule
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# Layer-wise lr decay as the paper-scale configs (benchmark.downstream.mm.optim; exercised here on CPU): lr
# base_lr * rate ** (num_layers + 1 - layer_id), no weight decay on norms, biases, pos_embed, cls_token.
# fp32 (the base's AmpOptimWrapper is mixed precision).
optim_wrapper = dict(type='OptimWrapper')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
]
# No recipe batch: the base's base_batch_size=16 would log a 'recipe assumes 16' note on every smoke run
# and make compute.py count 16 images per step instead of the smoke batch.
auto_scale_lr = None

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    _delete_=True,  # no visualization hook
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=2),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=None,  # smoke runs keep no training state (and nothing torch.loads it back)
    sampler_seed=dict(type='DistSamplerSeedHook'))
find_unused_parameters = False  # mmengine's default, as this config had before it inherited the base's True
visualizer = dict(_delete_=True, type='Visualizer', vis_backends=[])
log_processor = dict(window_size=2)
