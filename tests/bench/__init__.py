"""``make bench``: Fleetward's figures next to baselines measured in the same run
(docs/benchmarks.md).

Benchmarks live with the tests, not in the shipped package: they use dev-only dependencies
(psutil)."""
