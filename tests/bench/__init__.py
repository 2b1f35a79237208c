"""Benchmark runner tests."""
