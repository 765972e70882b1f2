# Shared base of the paper-scale Mask R-CNN + FPN configs on a ViT feature pyramid (ViTPyramid), COCO.
# Not run on its own: mask_rcnn_vit_{s,b}_fpn_3x_coco.py inherit it (mmengine `_base_`) and set the
# backbone arch (and drop-path rate); mask_rcnn_vit_b_fpn_6x_coco_random_init.py changes the schedule.
#
# Provenance. The paper (Table 4) fine-tunes "Mask R-CNN, ViT-B + feature pyramid, MMDetection";
# its detection hyper-parameters are NOT known (../shared/paper/PROTOCOL.md). The first author's XCiT
# detection code (facebookresearch/xcit, detection/configs/xcit/mask_rcnn_xcit_*_p16_3x_coco.py),
# itself taken from Swin's, is followed wherever the paper is silent:
#   - ViT pyramid from blocks [3, 5, 7, 11]: 2x deconv x2 (SyncBN + GELU between) / deconv / identity /
#     max-pool -> strides 4, 8, 16, 32 (XCiT: SyncBN in the pyramid; FPN and heads without norm),
#   - mmdet's standard Mask R-CNN heads (256-wide FPN, 2x1024 box MLP, 4-conv mask head),
#   - AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, none on norms/biases/position embedding,
#   - 3x schedule: 36 epochs, lr x0.1 at epochs 27 and 33, linear warm-up over 500 iterations from
#     0.001 x lr (mmdet / XCiT `schedule_1x` warm-up),
#   - DETR / Sparse R-CNN multi-scale training (XCiT, Swin): horizontal flip, then either a random
#     short side in 480..800 (step 32, long side <= 1333) or a random short side in {400, 500, 600},
#     a random 384..600 crop, and a random short side in 480..800,
#   - 16 images per step = 2 per GPU x 8 GPUs, mixed precision (XCiT: apex fp16),
#   - test at 1333x800 (keep ratio), COCO bbox + segm mAP.
# Our documented choice (not XCiT's, which had no layer decay): BEiT-style layer-wise lr decay
# (benchmark.downstream.mm.optim.ViTLayerDecayOptimizerConstructor) with rate 0.7 -- ViTDet's value for ViT-B
# Mask R-CNN (Li et al. 2022). The paper's value, if it used one, is unknown.
#
# `python -m benchmark.detect` fills in at run time: data root, class names and the heads'
# num_classes, backbone checkpoint / arch / img_size (from the checkpoint) and the FPN in_channels,
# work_dir, seed. Outside torch.distributed it switches SyncBN -> BN and, without CUDA,
# AmpOptimWrapper -> OptimWrapper (both logged).

custom_imports = dict(imports=['benchmark.downstream.mm'], allow_failed_imports=False)
default_scope = 'mmdet'

data_root = 'data/coco/'  # replaced by --data-root
num_classes = 80  # replaced by the number of categories in the annotation file
embed_dim = 768  # replaced from the backbone's arch
backend_args = None

model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ViTPyramid',
        arch='vit-b16',  # replaced by the checkpoint's arch when one is given
        img_size=224,  # the pre-training size; replaced by the checkpoint's
        out_indices=[3, 5, 7, 11],  # XCiT / BEiT for 12-block models
        drop_path_rate=0.1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        checkpoint=None),  # replaced by --ckpt
    neck=dict(
        type='FPN',
        in_channels=[embed_dim] * 4,
        out_channels=256,
        num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            scales=[8],
            ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=num_classes,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0.0, 0.0, 0.0, 0.0],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=num_classes,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.7,
                neg_iou_thr=0.3,
                min_pos_iou=0.3,
                match_low_quality=True,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=256,
                pos_fraction=0.5,
                neg_pos_ub=-1,
                add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(
            nms_pre=2000,
            max_per_img=1000,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5,
                match_low_quality=True,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=512,
                pos_fraction=0.25,
                neg_pos_ub=-1,
                add_gt_as_proposals=True),
            mask_size=28,
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(
            nms_pre=1000,
            max_per_img=1000,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100,
            mask_thr_binary=0.5)))

# ---------------------------------------------------------------- data
# Scales are (long side, short side) bounds for keep-ratio resizing.
ms_scales = [(1333, s) for s in range(480, 801, 32)]  # short side 480, 512, ..., 800
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,  # per GPU; x 8 GPUs = 16
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
max_epochs = 36
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='AmpOptimWrapper',  # mixed precision as XCiT; fp32 OptimWrapper on CPU (switched by the runner)
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.7,  # our choice (ViTDet, ViT-B); the paper's value is unknown
        num_layers=None))  # None: the backbone's block count (12 for ViT-S/16 and ViT-B/16)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)  # the recipe: 8 GPUs x 2 images

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
# the ViT's final norm is not used by the pyramid (features are taken after the blocks)
find_unused_parameters = True
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
visualizer = dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')])  # named after the run by the Runner
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)  # replaced by --seed
