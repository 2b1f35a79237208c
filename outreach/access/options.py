"""Offered times as we store them (JSON on the offer row) and as a patient reads them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from channels.dates import format_short, format_when
from connector.scheduling import SlotOption

MAX_OPTIONS = 5


def to_json(option: SlotOption) -> dict[str, Any]:
    return {"start": option.start.isoformat(), "end": option.end.isoformat(),
            "slot": option.slot, "slot_version": option.slot_version,
            "schedule": option.schedule, "actors": list(option.actors),
            "service_type": [list(pair) for pair in option.service_type]}


def from_json(data: dict[str, Any]) -> SlotOption:
    return SlotOption(
        start=datetime.fromisoformat(data["start"]), end=datetime.fromisoformat(data["end"]),
        slot=data.get("slot"), slot_version=data.get("slot_version"),
        schedule=data.get("schedule"), actors=tuple(data.get("actors") or ()),
        service_type=tuple((str(s), str(c)) for s, c in data.get("service_type") or ()))


def stored(options: Sequence[SlotOption], zone: ZoneInfo) -> dict[str, Any]:
    """The options, and the patient's zone they are shown in."""
    return {"options": [to_json(o) for o in options[:MAX_OPTIONS]], "zone": zone.key}


def loaded(document: dict[str, Any]) -> list[SlotOption]:
    return [from_json(item) for item in document.get("options", [])][:MAX_OPTIONS]


def zone_of(document: dict[str, Any], fallback: ZoneInfo) -> ZoneInfo:
    try:
        return ZoneInfo(str(document["zone"]))
    except (KeyError, ValueError):
        return fallback


def numbered(options: Sequence[SlotOption], zone: ZoneInfo, language: str) -> str:
    """"1) Tue 9 Dec 09:00, 2) Wed 10 Dec 14:30": short enough for one or two SMS segments."""
    return ", ".join(f"{n}) {format_short(o.start.astimezone(zone), language)}"
                     for n, o in enumerate(options, start=1))


def when(option: SlotOption, zone: ZoneInfo, language: str) -> str:
    return format_when(option.start.astimezone(zone), language)

