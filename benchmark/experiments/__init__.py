"""The experiment registry, by concern: the run/ref data model (:mod:`~.model`), the real data sets
and their layouts (:mod:`~.datasets`), the paper's comparisons (:mod:`~.paper`), the scales as
deltas from the paper's protocol (:mod:`~.scales`), the smoke chain (:mod:`~.smoke`), the paper in
miniature (:mod:`~.mini`) and the registry of artifacts that plans runs (:mod:`~.registry`).
"""
