"""Outcome report tests."""
