"""SSL pre-training benchmark suite."""
