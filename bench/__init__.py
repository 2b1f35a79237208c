"""Benchmarks: each measures a product path against the bare parts underneath, in one run."""
