"""Topic-based notification bundles (fhir_fixtures/notifications): both Backport IG shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connector.errors import InvalidResource
from connector.notifications import parse_notification
from connector.resources import validate_resource
from connector.subscriptions import desired_topic

FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "notifications"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_is_a_valid_bundle(name: str) -> None:
    validate_resource(fixture(name), "Bundle")


def test_r4_and_r4b_shapes_read_the_same() -> None:
    r4 = parse_notification(fixture("r4-event-full-resource.json"))
    r4b = parse_notification(fixture("r4b-event-full-resource.json"))

    assert r4 == r4b
    assert (r4.subscription_id, r4.type, r4.events_since_start) == (
        "outreach-appointments", "event-notification", 8)
    (event,) = r4.events
    assert event.number == 8 and event.focus == ("Appointment", "appt-ana")
    assert event.resource is not None and event.resource["status"] == "booked"


def test_id_only_and_empty_payloads() -> None:
    (id_only,) = parse_notification(fixture("r4-event-id-only.json")).events
    assert id_only.focus == ("Appointment", "appt-ana") and id_only.resource is None

    (empty,) = parse_notification(fixture("r4-event-empty.json")).events
    assert empty.focus is None and empty.resource is None and empty.number == 8


def test_handshake_and_heartbeat() -> None:
    handshake = parse_notification(fixture("r4-handshake.json"))
    heartbeat = parse_notification(fixture("r4-heartbeat.json"))

    assert (handshake.type, handshake.events_since_start, handshake.events) == ("handshake", 0, [])
    assert (heartbeat.type, heartbeat.events_since_start) == ("heartbeat", 7)


@pytest.mark.parametrize("broken", [
    {"resourceType": "Patient"},
    {"resourceType": "Bundle", "type": "history", "entry": []},
    {"resourceType": "Bundle", "type": "history",
     "entry": [{"resource": {"resourceType": "Patient"}}]},
])
def test_not_a_notification_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(InvalidResource):
        parse_notification(broken)


def test_an_invalid_included_resource_is_refused() -> None:
    bundle = fixture("r4-event-full-resource.json")
    bundle["entry"][1]["resource"]["status"] = "bogus"

    with pytest.raises(InvalidResource, match="status"):
        parse_notification(bundle)


def test_the_topic_subscription_we_ask_for_is_valid_r4() -> None:
    sub = desired_topic("http://example.org/topic/appointment", "Appointment",
                        "https://outreach.example.org/fhir/notify", "s3cret")
    validate_resource(sub, "Subscription")
    assert sub["channel"]["_payload"]["extension"][0]["valueCode"] == "id-only"
