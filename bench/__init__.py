"""Benchmarks and load tests for StayCheck (``make bench``, ``make load``); not part of
``make test``. Run the modules from the repository root as ``python -m bench.NAME``."""
