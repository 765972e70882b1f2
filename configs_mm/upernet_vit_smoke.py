# UperNet (+ FCN auxiliary head) on a ViT feature pyramid (ViTPyramid), ADE20k: a CPU smoke config.
#
# Standalone mmengine config for mmseg 1.2. `python -m benchmark.segment` fills in at run time:
#   - the data root (train/val dataloaders),
#   - the class names (synthetic.json beside the data, else ADE20k's 150) as
#     metainfo=dict(classes=...) and the heads' num_classes,
#   - the backbone checkpoint, arch and img_size (from the checkpoint's model spec) and the heads'
#     in_channels (= embed_dim),
#   - work_dir, seed, experiment_name.
# The dataset type is mmseg's BaseSegDataset with ADE20k's layout and reduce_zero_label=True:
# ADE20KDataset itself only accepts class names out of ADE's own 150.
# The paper / BEiT protocol (upernet_vit_{s,b}_512x512_160k_ade20k.py: 512 crops, 160k iterations) is far beyond CPU.

custom_imports = dict(imports=['benchmark.mm'], allow_failed_imports=False)
default_scope = 'mmseg'

data_root = 'data/ade20k/'  # replaced by --data-root
crop_size = (128, 128)
num_classes = 150  # replaced by the number of classes of the data
embed_dim = 192  # vit-smoke / ViT-Ti width; replaced from the backbone's arch
# SyncBN as the paper-scale config; a single-process run switches it to BN (and logs it)
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    pretrained=None,
    backbone=dict(
        type='ViTPyramid',
        arch='vit-smoke',  # replaced by the checkpoint's arch when one is given
        img_size=224,  # the pre-training size; replaced by the checkpoint's
        out_indices=None,  # evenly spaced, ending at the last block
        drop_path_rate=0.1,
        norm_cfg=norm_cfg,  # BN outside torch.distributed
        checkpoint=None),  # replaced by --ckpt
    decode_head=dict(
        type='UPerHead',
        in_channels=[embed_dim] * 4,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=128,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=embed_dim,
        in_index=2,
        channels=64,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# ---------------------------------------------------------------- data
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset_common = dict(
    type='BaseSegDataset',
    data_root=data_root,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
max_iters = 40
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Layer-wise lr decay as the paper-scale configs (benchmark.mm.optim; exercised here on CPU): lr
# base_lr * rate ** (num_layers + 1 - layer_id), no weight decay on norms, biases, pos_embed, cls_token.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65, num_layers=None))  # None: the backbone's block count
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=5, end=max_iters, by_epoch=False),
]

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=None,  # smoke runs keep no training state (and nothing torch.loads it back)
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
visualizer = dict(type='Visualizer', vis_backends=[])
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)  # replaced by --seed
