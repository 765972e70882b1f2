# UperNet (+ FCN auxiliary head) on a ViT feature pyramid (ViTPyramid), ADE20k: a CPU smoke config.
#
# mmengine config for mmseg 1.2. It inherits the paper-scale base (_base_upernet_vit_512x512_160k_ade20k.py:
# model, heads, data layout, optimiser, runtime) and overrides sizes and lengths only.
# `python -m benchmark.segment` fills in at run time:
#   - the data root (train/val dataloaders),
#   - the class names (synthetic.json beside the data, else ADE20k's 150) as
#     metainfo=dict(classes=...) and the heads' num_classes,
#   - the backbone checkpoint, arch and img_size (from the checkpoint's model spec) and the heads'
#     in_channels (= embed_dim),
#   - work_dir, seed, experiment_name.
# The dataset type is mmseg's BaseSegDataset with ADE20k's layout and reduce_zero_label=True:
# ADE20KDataset itself only accepts class names out of ADE's own 150.
# The paper / BEiT protocol (upernet_vit_{s,b}_512x512_160k_ade20k.py: 512 crops, 160k iterations) is far beyond CPU.
# The base's norm_cfg (SyncBN, as the paper-scale config) is kept: a single-process run switches it to BN
# (and logs it).
_base_ = './_base_upernet_vit_512x512_160k_ade20k.py'

data_root = 'data/ade20k/'  # replaced by --data-root
crop_size = (128, 128)
embed_dim = 192  # vit-smoke / ViT-Ti width; replaced from the backbone's arch
decode_channels = 128

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='vit-smoke',  # replaced by the checkpoint's arch when one is given
        out_indices=None),  # evenly spaced, ending at the last block
    decode_head=dict(in_channels=[embed_dim] * 4, channels=decode_channels),
    auxiliary_head=dict(in_channels=embed_dim, channels=64),
    test_cfg=dict(_delete_=True, mode='whole'))

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
dataset_common = dict(data_root=data_root)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# ---------------------------------------------------------------- schedule
max_iters = 40
warmup_iters = 5
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
# Layer-wise lr decay as the paper-scale configs (benchmark.downstream.mm.optim; exercised here on CPU): lr
# base_lr * rate ** (num_layers + 1 - layer_id), no weight decay on norms, biases, pos_embed, cls_token.
# fp32 (the base's AmpOptimWrapper is mixed precision), lr 1e-4 (the base's BEiT value is 7e-4).
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=warmup_iters, end=max_iters, by_epoch=False),
]
# No recipe batch: the base's base_batch_size=16 would log a 'recipe assumes 16' note on every smoke run
# and make compute.py count 16 images per step instead of the smoke batch.
auto_scale_lr = None

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=None)  # smoke runs keep no training state (and nothing torch.loads it back)
find_unused_parameters = False  # mmengine's default, as this config had before it inherited the base's True
env_cfg = dict(cudnn_benchmark=False)
visualizer = dict(_delete_=True, type='Visualizer', vis_backends=[])
log_processor = dict(window_size=10)
