"""MMDetection / MMSegmentation integration: importing this package registers our mm components.

* :class:`ViTPyramid` (backbone) in ``mmdet.registry.MODELS`` and ``mmseg.registry.MODELS``;
* :class:`ViTLayerDecayOptimizerConstructor` (layer-wise lr decay) in mmengine's, mmdet's and
  mmseg's ``OPTIM_WRAPPER_CONSTRUCTORS``.

Configs load it with ``custom_imports=dict(imports=['benchmark.downstream.mm'], allow_failed_imports=False)``.
Registration uses ``force=True``, so a re-import (importlib.reload, test runners) does not raise.
"""

from __future__ import annotations

try:
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMDET_CONSTRUCTORS
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_CONSTRUCTORS
    from mmseg.registry import MODELS as MMSEG_MODELS
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMSEG_CONSTRUCTORS
except ModuleNotFoundError as err:
    # A machine without the mm stack (a GPU machine with torch alone) still plans, prices and runs
    # every other kind; a dense run there stops at its start, naming the missing package.
    MISSING: str | None = err.name
else:
    MISSING = None
    from benchmark.downstream.mm.backbone import ViTPyramid, checkpoint_spec, vit_embed_dim
    from benchmark.downstream.mm.optim import ViTLayerDecayOptimizerConstructor, register

    for _registry in (MMDET_MODELS, MMSEG_MODELS):
        _registry.register_module(name="ViTPyramid", module=ViTPyramid, force=True)
    register((MMENGINE_CONSTRUCTORS, MMDET_CONSTRUCTORS, MMSEG_CONSTRUCTORS))

    __all__ = ["ViTLayerDecayOptimizerConstructor", "ViTPyramid", "checkpoint_spec", "vit_embed_dim"]
