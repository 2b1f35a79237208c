"""Our Subscriptions in the EHR: R4 rest-hook, or Backport IG topic-based where the EHR offers a
topic for the resource type; the shape we ask for, and creating or repairing them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.client import FHIR_JSON, FhirApi

SECRET_HEADER = "X-Outreach-Secret"
REASON = "fhir-outreach: notice changes that may start or stop patient outreach"


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    resource_type: str
    subscription_id: str | None
    status: str
    action: str  # created | repaired | unchanged | missing
    error: str | None = None
    kind: str = "rest-hook"  # rest-hook | topic-based


def desired(resource_type: str, endpoint: str, secret: str) -> dict[str, Any]:
    """No status filter in the criteria: R4 does not notify when a resource *leaves* its
    criteria, and a cancellation is exactly such a change."""
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": REASON,
        "criteria": f"{resource_type}?",
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": FHIR_JSON,
            "header": [f"{SECRET_HEADER}: {secret}"],
        },
    }


BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def desired_topic(
    topic: str, resource_type: str, endpoint: str, secret: str, *,
    content: str = "id-only", heartbeat_seconds: int = 300,
) -> dict[str, Any]:
    """A Backport IG (R4) topic-based Subscription: `criteria` is the topic's canonical URL, the
    filter and payload content are extensions. `id-only` by default: we re-read from the EHR
    anyway, so full resources would only add bytes (and PHI) on the wire."""
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested",
        "reason": REASON,
        "criteria": topic,
        "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                     "valueString": f"{resource_type}?"}]},
        "channel": {
            "extension": [{"url": f"{BACKPORT}/backport-heartbeat-period",
                           "valueUnsignedInt": heartbeat_seconds}],
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": FHIR_JSON,
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                        "valueCode": content}]},
            "header": [f"{SECRET_HEADER}: {secret}"],
        },
    }


def _filtered_type(subscription: dict[str, Any]) -> str | None:
    """The resource type a topic-based Subscription filters on (its filter criteria)."""
    extensions = (subscription.get("_criteria") or {}).get("extension") or []
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, dict) and str(extension.get("url", "")).endswith(
                "/backport-filter-criteria"):
            return str(extension.get("valueString", "")).split("?")[0].strip() or None
    return None


def _ours(client: FhirApi, endpoint: str) -> dict[str, dict[str, Any]]:
    """Our Subscriptions by the resource type they watch (rest-hook: the criteria's type;
    topic-based: the filter's)."""
    found = {}
    for sub in client.search("Subscription", {"_count": 100}):
        if (sub.get("channel") or {}).get("endpoint") == endpoint:
            criteria = str(sub.get("criteria", ""))
            watched = _filtered_type(sub) if criteria.startswith(("http:", "https:")) else (
                criteria.split("?")[0])
            if watched:
                found[watched] = sub
    return found


def _kind(subscription: dict[str, Any]) -> str:
    return "topic-based" if str(subscription.get("criteria", "")).startswith(
        ("http:", "https:")) else "rest-hook"


def _needs_repair(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    channel = existing.get("channel") or {}
    return (
        existing.get("status") in ("error", "off")
        or channel.get("header") != wanted["channel"]["header"]
        or channel.get("payload") != wanted["channel"]["payload"]
        or existing.get("criteria") != wanted["criteria"]
    )


def ensure(
    client: FhirApi, resource_types: list[str], endpoint: str, secret: str,
    topics: Mapping[str, str] | None = None,
) -> list[SubscriptionState]:
    """Create missing Subscriptions and repair ones in error, off, with a stale secret or of
    the other kind. `topics`: resource type → the topic canonical to subscribe to instead of a
    rest-hook criteria (only topics the EHR advertises)."""
    existing = _ours(client, endpoint)
    states = []
    for rtype in resource_types:
        topic = (topics or {}).get(rtype)
        wanted = (desired_topic(topic, rtype, endpoint, secret) if topic
                  else desired(rtype, endpoint, secret))
        current = existing.get(rtype)
        if current is None:
            created, _ = client.create(wanted)
            states.append(SubscriptionState(rtype, created.get("id"), created.get("status", "?"),
                                            "created", kind=_kind(wanted)))
        elif _needs_repair(current, wanted):
            updated = client.update({**wanted, "id": current["id"]})
            states.append(SubscriptionState(rtype, updated.get("id"), updated.get("status", "?"),
                                            "repaired", kind=_kind(wanted)))
        else:
            states.append(SubscriptionState(rtype, current.get("id"), current["status"],
                                            "unchanged", kind=_kind(current)))
    return states


def status(client: FhirApi, resource_types: list[str], endpoint: str) -> list[SubscriptionState]:
    existing = _ours(client, endpoint)
    states = []
    for rtype in resource_types:
        sub = existing.get(rtype)
        if sub is None:
            states.append(SubscriptionState(rtype, None, "missing", "missing"))
        else:
            states.append(SubscriptionState(rtype, sub.get("id"), sub.get("status", "?"),
                                            "unchanged", sub.get("error"), _kind(sub)))
    return states
