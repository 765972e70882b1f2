"""What every training stage shares: the one loop (:mod:`~benchmark.training.loop`), the optimiser
and schedule (:mod:`~benchmark.training.optim`), training checkpoints and exact resume
(:mod:`~benchmark.training.checkpoint`), configs, the device and process group, the log and the
stop signal."""
