"""Downstream adapters: the ViT as an MMDetection / MMSegmentation backbone (:mod:`~benchmark.downstream.mm`)."""
