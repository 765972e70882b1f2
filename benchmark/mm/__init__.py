"""MMDetection / MMSegmentation integration: importing this package registers :class:`ViTPyramid`.

Configs load it with ``custom_imports=dict(imports=['benchmark.mm'], allow_failed_imports=False)``;
the same class is registered in ``mmdet.registry.MODELS`` and ``mmseg.registry.MODELS``.
"""

from __future__ import annotations

from mmdet.registry import MODELS as MMDET_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

from benchmark.mm.backbone import ViTPyramid, checkpoint_spec, vit_embed_dim

for _registry in (MMDET_MODELS, MMSEG_MODELS):
    # force=True keeps a re-import (importlib.reload, test runners) from raising KeyError
    _registry.register_module(name="ViTPyramid", module=ViTPyramid, force=True)

__all__ = ["ViTPyramid", "checkpoint_spec", "vit_embed_dim"]
