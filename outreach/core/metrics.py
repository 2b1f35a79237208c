"""Prometheus counters for what an operator watches: notifications, sends, write-backs."""

from __future__ import annotations

from prometheus_client import Counter

NOTIFICATIONS = Counter(
    "outreach_notifications_total", "Rest-hook notifications received", ["outcome"]
)
SENDS = Counter("outreach_steps_total", "Steps finished by send_step", ["state"])
WRITEBACKS = Counter("outreach_writebacks_total", "Write-back attempts", ["outcome"])
