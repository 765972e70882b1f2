# Paper-scale UperNet, ViT-B/16 backbone, ADE20k, BEiT protocol: 512x512 crops, 160k iterations,
# 8 GPUs x 2 images. Everything but the backbone lives in _base_upernet_vit_512x512_160k_ade20k.py
# (provenance notes there): AdamW lr 7e-4 / wd 0.05, layer decay 0.65, 1500-iteration linear
# warm-up then poly, SyncBN, sliding-window inference (512, stride 341), mIoU.
_base_ = './_base_upernet_vit_512x512_160k_ade20k.py'

embed_dim = 768
decode_channels = 768  # BEiT-B
model = dict(
    backbone=dict(arch='vit-b16', out_indices=[3, 5, 7, 11], drop_path_rate=0.1),  # BEiT-B
    decode_head=dict(in_channels=[embed_dim] * 4, channels=decode_channels),
    auxiliary_head=dict(in_channels=embed_dim))
