"""Tools beside the pipeline: throughput benchmarks (:mod:`~benchmark.tools.perf`) and the stack
check (:mod:`~benchmark.tools.doctor`)."""
