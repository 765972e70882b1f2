# Paper-scale Mask R-CNN + FPN, ViT-B/16 backbone, COCO, 3x schedule (36 epochs), 8 GPUs x 2 images.
# Everything but the backbone lives in _base_mask_rcnn_vit_fpn_3x_coco.py (provenance notes there):
# AdamW lr 1e-4 / wd 0.05, layer decay 0.7 (our choice; the paper's is unknown), multi-scale
# training with random crops, SyncBN in the pyramid, test at 1333x800, bbox + segm mAP.
_base_ = './_base_mask_rcnn_vit_fpn_3x_coco.py'

embed_dim = 768
model = dict(
    backbone=dict(
        arch='vit-b16',
        out_indices=[3, 5, 7, 11],
        drop_path_rate=0.1),  # ViTDet / BEiT ViT-B value (our choice)
    neck=dict(in_channels=[embed_dim] * 4))
