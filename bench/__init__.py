"""Benchmarks for syncd at 10,000 users (issue #7): see bench/run.py and docs/performance.md."""
