"""Benchmarks for reconciler: every figure is measured next to its floor or peer, in the same run.

Run with `python -m bench` (or `make bench`); see bench/README.md.
"""
