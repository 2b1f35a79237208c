"""R4 rest-hook Subscriptions: the shape we ask the EHR for, and creating or repairing them."""

from __future__ import annotations

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


def _ours(client: FhirApi, endpoint: str) -> dict[str, dict[str, Any]]:
    found = {}
    for sub in client.search("Subscription", {"_count": 100}):
        if (sub.get("channel") or {}).get("endpoint") == endpoint:
            found[str(sub.get("criteria", "")).split("?")[0]] = sub
    return found


def _needs_repair(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    channel = existing.get("channel") or {}
    return (
        existing.get("status") in ("error", "off")
        or channel.get("header") != wanted["channel"]["header"]
        or channel.get("payload") != wanted["channel"]["payload"]
        or existing.get("criteria") != wanted["criteria"]
    )


def ensure(
    client: FhirApi, resource_types: list[str], endpoint: str, secret: str
) -> list[SubscriptionState]:
    """Create missing Subscriptions and repair ones in error, off, or with a stale secret."""
    existing = _ours(client, endpoint)
    states = []
    for rtype in resource_types:
        wanted = desired(rtype, endpoint, secret)
        current = existing.get(rtype)
        if current is None:
            created, _ = client.create(wanted)
            states.append(SubscriptionState(rtype, created.get("id"), created.get("status", "?"),
                                            "created"))
        elif _needs_repair(current, wanted):
            updated = client.update({**wanted, "id": current["id"]})
            states.append(SubscriptionState(rtype, updated.get("id"), updated.get("status", "?"),
                                            "repaired"))
        else:
            states.append(SubscriptionState(rtype, current.get("id"), current["status"],
                                            "unchanged"))
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
                                            "unchanged", sub.get("error")))
    return states
