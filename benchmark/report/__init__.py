"""The report: tables, plots and REPORT.md rebuilt from the run directories alone
(:mod:`~benchmark.report.build`), the mini findings (:mod:`~benchmark.report.findings`), the
throughput section (:mod:`~benchmark.report.perf_section`) and the ``result.json`` schema every
evaluation writes (:mod:`~benchmark.stages.results`)."""
