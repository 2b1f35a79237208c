"""What a template may say about an appointment: the minimum necessary, nothing clinical."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from channels.dates import format_when
from outreach.core.settings import Settings
from rules.recipients import first_name


def _place(resource: dict[str, Any]) -> str | None:
    for participant in resource.get("participant", []):
        actor = participant.get("actor") or {}
        if str(actor.get("reference", "")).startswith("Location/") and actor.get("display"):
            return str(actor["display"])
    return None


def message_context(
    settings: Settings, patient: dict[str, Any], resource: dict[str, Any],
    anchor_at: datetime | None, zone: ZoneInfo, language: str | None,
) -> dict[str, Any]:
    """Deliberately narrow: no reason, diagnosis, service or visit type ever reaches a template."""
    return {
        "first_name": first_name(patient) or ("there" if language != "es" else ""),
        "when": format_when(anchor_at.astimezone(zone), language) if anchor_at else "",
        "place": _place(resource),
        "organization": settings.organization_name,
        "callback_phone": settings.callback_phone,
    }
