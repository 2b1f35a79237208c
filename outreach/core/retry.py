"""Backoff for everything that retries: sends, write-backs, EHR reads."""

from __future__ import annotations

import random
from datetime import timedelta


def backoff(attempt: int, base: float = 30.0, cap: float = 3600.0) -> timedelta:
    """Exponential with ±20% jitter, so a fleet of retries does not arrive in lockstep."""
    seconds = min(cap, base * 2 ** max(0, attempt - 1))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))
