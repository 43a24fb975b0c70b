"""Benchmarks: scripts that print tables, run by hand (`python -m r1zero.bench.NAME`)."""
