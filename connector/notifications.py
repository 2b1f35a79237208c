"""Topic-based notification bundles (Subscriptions R5 Backport IG): the R4 shape (a `Parameters`
status resource) and the R4B shape (a `SubscriptionStatus` resource), read into one form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.client import reference_problem
from connector.errors import InvalidResource
from connector.resources import validate_resource
from rules.changes import parse_instant

TYPES = frozenset({"handshake", "heartbeat", "event-notification", "query-status", "query-event"})
# The backport IG's subscription statuses; the R4 shape carries them as any value, and they are
# stored (as the topic is, up to 255 characters, and the counts, as 64-bit integers).
STATUSES = frozenset({"requested", "active", "error", "off", "entered-in-error"})
MAX_TOPIC = 255
MAX_COUNT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    number: int | None
    timestamp: datetime | None
    focus: tuple[str, str] | None        # (type, id); None in an `empty` notification
    resource: dict[str, Any] | None      # the full resource, when the bundle carries it
    deleted: bool = False                # a full-resource entry for a delete has no resource


@dataclass(frozen=True, slots=True)
class TopicNotification:
    subscription_id: str
    topic: str | None
    type: str
    status: str | None
    events_since_start: int | None
    events: list[NotificationEvent] = field(default_factory=list)


def _reference_key(reference: str) -> tuple[str, str] | None:
    """`https://ehr/fhir/Encounter/123` or `Encounter/123/_history/2` → ("Encounter", "123")."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def _reference(value: Any) -> str | None:
    """The `reference` of a Reference; None for anything else (the R4 shape's `Parameters`
    carry any value type, so a focus or subscription may come as a string or a number)."""
    reference = value.get("reference") if isinstance(value, dict) else None
    return reference if isinstance(reference, str) else None


def _count(value: Any) -> int | None:
    # R4/R4B carry event counts as strings (int64 is R5-only).
    try:
        count = int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidResource("an event count is not a number") from exc
    if count is not None and not 0 <= count <= MAX_COUNT:
        raise InvalidResource("an event count is out of range")
    return count


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise InvalidResource("an event timestamp is not a FHIR instant") from exc


def _text(status: dict[str, Any], name: str, allowed: frozenset[str] | None = None,
          longest: int = MAX_TOPIC) -> str | None:
    """A status field that must be a string (of `allowed`, when given), or absent."""
    value = status.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > longest or (
            allowed is not None and value not in allowed):
        raise InvalidResource(f"the notification's {name} is not one the Backport IG defines")
    return value


def _value(param: dict[str, Any]) -> Any:
    return next((v for k, v in param.items() if k.startswith("value")), None)


def _from_parameters(status: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The R4 shape as R4B-style fields, so one reader handles both."""
    fields: dict[str, Any] = {}
    events = []
    for param in status.get("parameter") or []:  # valid R4 may carry `null` for a list
        name = param.get("name")
        if name == "notification-event":
            parts = {p.get("name"): _value(p) for p in param.get("part") or []}
            events.append({"eventNumber": parts.get("event-number"),
                           "timestamp": parts.get("timestamp"), "focus": parts.get("focus")})
        else:
            fields[name] = _value(param)
    return {
        "subscription": fields.get("subscription"), "topic": fields.get("topic"),
        "status": fields.get("status"), "type": fields.get("type"),
        "eventsSinceSubscriptionStart": fields.get("events-since-subscription-start"),
    }, events


def _resources_by_key(entries: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for entry in entries:
        key = _reference_key(str(entry.get("fullUrl", "")))
        resource = entry.get("resource")
        if isinstance(resource, dict) and "id" in resource:
            key = (str(resource.get("resourceType")), str(resource["id"]))
        if key is not None:
            found[key] = entry
    return found


def parse_notification(bundle: Any) -> TopicNotification:
    """Read a notification bundle; InvalidResource (→ 400) when it is not one. Included
    resources are validated as R4 like rest-hook payloads."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidResource("not a notification Bundle")
    entries = bundle.get("entry") or []
    first = entries[0].get("resource") if entries else None
    if not isinstance(first, dict):
        raise InvalidResource("a notification Bundle starts with its subscription status")
    if first.get("resourceType") == "Parameters":
        status, raw_events = _from_parameters(first)
    elif first.get("resourceType") == "SubscriptionStatus":
        status, raw_events = first, first.get("notificationEvent") or []
    else:
        raise InvalidResource("the first entry is neither Parameters nor SubscriptionStatus")
    kind = status.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise InvalidResource("unknown notification type")
    subscription = _reference_key(_reference(status.get("subscription")) or "")
    if subscription is None or reference_problem("Subscription", subscription[1]):
        raise InvalidResource("the status names no subscription (by a FHIR id)")
    included = _resources_by_key(entries[1:])
    events = []
    for raw in raw_events:
        focus_ref = _reference(raw.get("focus"))
        if focus_ref is None and raw.get("focus") is not None:
            raise InvalidResource("an event's focus is not a Reference")
        focus = _reference_key(focus_ref) if focus_ref else None
        problem = reference_problem(*focus) if focus else None
        if problem:  # it would be read from the EHR, and stored, by this type and id
            raise InvalidResource(f"an event's focus is not a FHIR reference: {problem}")
        entry = included.get(focus) if focus else None
        resource = entry.get("resource") if entry else None
        if resource is not None and focus is not None:
            resource = validate_resource(resource, focus[0])
        deleted = bool(entry and (entry.get("request") or {}).get("method") == "DELETE")
        events.append(NotificationEvent(_count(raw.get("eventNumber")),
                                        _instant(raw.get("timestamp")), focus, resource, deleted))
    return TopicNotification(
        subscription_id=subscription[1], topic=_text(status, "topic"), type=kind,
        status=_text(status, "status", STATUSES),
        events_since_start=_count(status.get("eventsSinceSubscriptionStart")),
        events=events,
    )
