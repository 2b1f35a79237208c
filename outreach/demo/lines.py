"""How the demo's timeline words things: time stamps, what a resource version is, and which
journey outcomes are worth a line."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from outreach.planning.outcomes import JourneyOutcome

PAD = " " * 24  # under the time stamp


def stamp(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


def stamp_plain(value: str) -> str:
    """An R4 instant as the timeline shows it ("2026-03-06T09:00:00Z" → "2026-03-06 09:00 UTC")."""
    return value.replace("+00:00", "Z").replace("T", " ").replace(":00Z", " UTC")


def not_triggered(journey: JourneyOutcome) -> bool:
    """A journey the change does not concern (another trigger): not worth a line."""
    return journey.action == "ignore" and (journey.reason == "trigger condition false"
                                           or journey.reason.endswith("not in trigger.on"))


def details(resource: dict[str, Any]) -> str:
    """What the timeline says about a version, after its kind (created, updated ...)."""
    rtype = resource["resourceType"]
    if rtype == "Appointment" and resource.get("status") == "waitlist":
        since = str(resource.get("created", ""))[:10]
        return f" (status waitlist{', waiting since ' + since if since else ''})"
    if rtype in ("Appointment", "Slot"):
        start = f", start {stamp_plain(resource['start'])}" if resource.get("start") else ""
        return f" (status {resource.get('status')}{start})"
    if rtype == "Schedule":
        actors = ", ".join(str(a.get("reference")) for a in resource.get("actor", []))
        return f" (actors {actors})"
    return ""
