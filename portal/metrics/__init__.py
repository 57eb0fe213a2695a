"""/metrics for Prometheus: the catalog's state (``collector``), the portal's request latency
(``latency``), and who may read them (``views``). docs/monitoring.md says what each series means.

Part of the project layer: it reads every app, and no app imports it.
"""
