"""Prometheus counters for what an operator watches: notifications, sends, write-backs.

Sends and write-backs are counted in the worker processes, notifications in the API: with
PROMETHEUS_MULTIPROC_DIR set (the same directory for `outreach serve` and `outreach worker`
on one host), each process writes its counts there and the API's /metrics adds them all up."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest, multiprocess

NOTIFICATIONS = Counter(
    "outreach_notifications_total", "Rest-hook notifications received", ["outcome"]
)
SENDS = Counter("outreach_steps_total", "Steps finished by send_step", ["state"])
WRITEBACKS = Counter("outreach_writebacks_total", "Write-back attempts", ["outcome"])


def exposition() -> bytes:
    """The text /metrics serves: every process's counts in multiprocess mode, else this one's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
    return bytes(generate_latest(REGISTRY))

