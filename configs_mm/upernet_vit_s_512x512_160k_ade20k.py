# Paper-scale UperNet, ViT-S/16 backbone, ADE20k, BEiT protocol: 512x512 crops, 160k iterations,
# 8 GPUs x 2 images. Everything but the backbone lives in _base_upernet_vit_512x512_160k_ade20k.py
# (provenance notes there): AdamW lr 7e-4 / wd 0.05, layer decay 0.65, 1500-iteration linear
# warm-up then poly, SyncBN, sliding-window inference (512, stride 341), mIoU.
# BEiT published no ViT-S segmentation config; ViT-S/16 has 12 blocks like ViT-B/16, so the
# optimisation recipe is kept. Our choices: UperNet width 512 (mmseg's DeiT-S UperNet; BEiT-B
# uses its 768 embedding width), drop-path 0.1 (mmseg's DeiT-S UperNet).
_base_ = './_base_upernet_vit_512x512_160k_ade20k.py'

embed_dim = 384
decode_channels = 512
model = dict(
    backbone=dict(arch='vit-s16', out_indices=[3, 5, 7, 11], drop_path_rate=0.1),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=decode_channels),
    auxiliary_head=dict(in_channels=embed_dim))
