"""The stages of the pipeline, one module each: ``data`` (data sets the suite writes), ``pretrain``,
``finetune``, ``probe`` (linear probe and k-NN), ``select`` (a setting chosen on val) and ``dense``
(the ``detect`` and ``segment`` kinds: MMDetection / MMSegmentation). Each defines its config, its run function and its
command line (:mod:`~benchmark.stages.cli`), and registers its run kind
(:mod:`~benchmark.stages.kinds`), which the driver, the launchers, the dry run and the report read;
:mod:`~benchmark.stages.catalogue` imports them all. A stage imports only from the packages below
``stages/`` and from the shared ``kinds``, ``cli`` and ``cost``, never another stage.
"""
