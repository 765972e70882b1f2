# Random-initialisation baseline: Mask R-CNN + FPN, ViT-B/16 trained from scratch on COCO
# (run with --ckpt none), 6x schedule (72 epochs), otherwise as mask_rcnn_vit_b_fpn_3x_coco.py.
#
# The paper's schedule for its random-init row is NOT known (../shared/paper/PROTOCOL.md).
# Our documented choice, after He et al. 2019 ("Rethinking ImageNet Pre-training": from-scratch
# Mask R-CNN needs a longer schedule, with SyncBN, to catch up; they train up to 6x and drop the lr
# at fixed distances from the end):
#   - 72 epochs, lr x0.1 at epochs 63 and 69 (the same 9- and 3-epoch tails as the 3x schedule),
#   - no layer-wise lr decay (rate 1.0): decaying the lr of randomly initialised lower blocks only
#     slows them down,
#   - same AdamW lr 1e-4 / wd 0.05, warm-up, augmentation, batch 16 and SyncBN as the 3x config.
_base_ = './mask_rcnn_vit_b_fpn_3x_coco.py'

max_epochs = 72
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=12)
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0, num_layers=None))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[63, 69], gamma=0.1),
]
