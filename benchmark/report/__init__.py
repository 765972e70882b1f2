"""The report: tables, plots and REPORT.md rebuilt from the run directories alone
(:mod:`~benchmark.report.build`; each evaluation's ``result.json``: :mod:`benchmark.utils.results`),
the mini findings (:mod:`~benchmark.report.findings`) and the throughput section
(:mod:`~benchmark.report.perf_section`)."""
