# Shared base of the paper-scale UperNet configs on a ViT feature pyramid (ViTPyramid), ADE20k.
# Not run on its own: upernet_vit_{s,b}_512x512_160k_ade20k.py inherit it (mmengine `_base_`) and
# set the backbone arch, drop-path rate and decoder width.
#
# Provenance. The paper (Table 5) reports ADE20k mIoU, most likely with BEiT's protocol
# (../shared/paper/PROTOCOL.md); its own hyper-parameters are NOT known. BEiT's recommended config
# for self-supervised ImageNet pre-training (microsoft/unilm, beit/semantic_segmentation/configs/
# beit/upernet/upernet_beit_base_12_512_slide_160k_ade20k_pt.py) is followed:
#   - UperNet (pool scales 1, 2, 3, 6) + FCN auxiliary head (weight 0.4) on block 7's features,
#     pyramid from blocks [3, 5, 7, 11] (BEiT's deconv / identity / max-pool), SyncBN,
#   - 512x512 crops: random rescale of a 2048x512 base by 0.5-2.0, random crop (cat_max_ratio 0.75),
#     flip, photometric distortion,
#   - AdamW lr 7e-4, betas (0.9, 0.999), weight decay 0.05, layer-wise lr decay 0.65
#     (benchmark.downstream.mm.optim.ViTLayerDecayOptimizerConstructor = BEiT's LayerDecayOptimizerConstructor),
#   - 160k iterations, linear warm-up over 1500 iterations from 1e-6 x lr, then poly (power 1) to 0,
#   - 16 images per step = 2 per GPU x 8 GPUs, mixed precision (BEiT: apex fp16),
#   - sliding-window inference (512x512 windows, stride 341) on images resized to short side 512,
#     single scale; mIoU.
# Differences from BEiT's model: a plain ViT with an absolute position embedding (BEiT: relative
# position bias, layer scale), as the rest of this benchmark.
#
# `python -m benchmark.segment` fills in at run time: data root, class names and the heads'
# num_classes, backbone checkpoint / arch / img_size (from the checkpoint) and the heads'
# in_channels, work_dir, seed. Outside torch.distributed it switches SyncBN -> BN and, without
# CUDA, AmpOptimWrapper -> OptimWrapper (both logged).

custom_imports = dict(imports=['benchmark.downstream.mm'], allow_failed_imports=False)
default_scope = 'mmseg'

data_root = 'data/ade/ADEChallengeData2016'  # replaced by --data-root
crop_size = (512, 512)
num_classes = 150  # replaced by the number of classes of the data
embed_dim = 768  # replaced from the backbone's arch
decode_channels = 768  # UperNet width (BEiT-B: 768)
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
        arch='vit-b16',  # replaced by the checkpoint's arch when one is given
        img_size=224,  # the pre-training size; replaced by the checkpoint's
        out_indices=[3, 5, 7, 11],
        drop_path_rate=0.1,
        norm_cfg=norm_cfg,
        checkpoint=None),  # replaced by --ckpt
    decode_head=dict(
        type='UPerHead',
        in_channels=[embed_dim] * 4,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=decode_channels,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=embed_dim,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# ---------------------------------------------------------------- data
# The dataset type is mmseg's BaseSegDataset with ADE20k's layout and reduce_zero_label=True
# (the runner sets the class names; ADE20KDataset only accepts ADE's own 150).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
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
    batch_size=2,  # per GPU; x 8 GPUs = 16
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
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
max_iters = 160000
warmup_iters = 1500
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='AmpOptimWrapper',  # mixed precision as BEiT; fp32 OptimWrapper on CPU (switched by the runner)
    optimizer=dict(type='AdamW', lr=7e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.65,  # BEiT (self-supervised ImageNet pre-training)
        num_layers=None))  # None: the backbone's block count (12 for ViT-S/16 and ViT-B/16)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=warmup_iters, end=max_iters, by_epoch=False),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)  # the recipe: 8 GPUs x 2 images

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# the ViT's final norm is not used by the pyramid (features are taken after the blocks)
find_unused_parameters = True
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')])  # named after the run by the Runner
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)  # replaced by --seed
