"""The driver: a plan of runs from the experiment registry, run in dependency order
(:mod:`~benchmark.driver.run`) by a launcher (:mod:`~benchmark.driver.launch`: this process,
torchrun, SLURM), with compute estimates for the dry run (:mod:`~benchmark.driver.compute`)."""
