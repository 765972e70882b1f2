"""The models: timm ViTs by size name (:mod:`~benchmark.models.vit`), their FLOPs
(:mod:`~benchmark.models.flops`) and checkpoint formats (:mod:`~benchmark.models.checkpoints`)."""
