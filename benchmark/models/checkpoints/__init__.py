"""Checkpoints, by concern: our formats and their conversions (:mod:`~.export`: the encoder
export, the mm backbone file, reading either, exact key checks), position-table geometry
(:mod:`~.geometry`: position embeddings and BEiT's relative position tables fitted to another
model), the published formats (:mod:`~.published`: timm/DeiT, MAE, DINO, BEiT, mmpretrain) and
the command line (:mod:`~.cli`, ``python -m benchmark.convert``).
"""
