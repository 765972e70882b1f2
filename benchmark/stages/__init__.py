"""The stages of the pipeline, one module each: ``data`` (data sets the suite writes), ``pretrain``,
``finetune``, ``probe`` (linear probe and k-NN), ``select`` (a setting chosen on val) and ``dense``
(the ``detect`` and ``segment`` kinds: MMDetection / MMSegmentation). Each defines its config, its run function and its
command line (:mod:`~benchmark.stages.cli`), and registers its run kind
(:mod:`~benchmark.stages.kinds`), which the driver, the launchers, the dry run and the report read;
:func:`~benchmark.stages.kinds.run_kinds` imports them (the driver's own start-up, and its --help,
need none of their libraries).
"""
