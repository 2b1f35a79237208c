"""planner.decide: what one Appointment change means for the shipped reminder journey."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import rules
from rules import ChangeKind, ResourceChange, decide
from rules.loader import LoadedJourney, load_journey_file, parse_journey

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = Path(rules.__file__).parent / "journeys" / "appointment-reminders.yaml"
JOURNEY = load_journey_file(SHIPPED)
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def demo(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "fhir_fixtures" / "demo" / name).read_text())
    return data


BEN_V1 = demo("12-appointment-ben-v1-booked.json")  # start 2026-03-05T15:30:00Z
BEN_V2 = demo("20-appointment-ben-v2-rescheduled.json")  # start 2026-03-10T16:00:00Z
BEN_V1_START = datetime(2026, 3, 5, 15, 30, tzinfo=UTC)


def change(
    current: dict[str, Any] | None,
    previous: dict[str, Any] | None = None,
    kind: ChangeKind | None = None,
) -> ResourceChange:
    resource = current if current is not None else previous
    assert resource is not None
    if kind is None:
        kind = ChangeKind.CREATED if previous is None else ChangeKind.UPDATED
    return ResourceChange(
        resource_type=resource["resourceType"], resource_id=resource["id"],
        version_id=(resource.get("meta") or {}).get("versionId", "1"),
        kind=kind, current=current, previous=previous,
    )


def decide_new(journey: LoadedJourney, ch: ResourceChange) -> rules.Decision:
    return decide(journey, ch, NOW, enrolled_anchor=None, enrolled=False)


def decide_enrolled(ch: ResourceChange, anchor: datetime = BEN_V1_START) -> rules.Decision:
    return decide(JOURNEY, ch, NOW, enrolled_anchor=anchor, enrolled=True)


def test_a_booked_future_appointment_is_enrolled_at_its_start() -> None:
    decision = decide_new(JOURNEY, change(BEN_V1))

    assert decision.action == "enroll"
    assert decision.anchor_at == BEN_V1_START


def test_an_update_that_books_an_appointment_enrolls_it() -> None:
    proposed = {**BEN_V1, "status": "proposed"}

    assert decide_new(JOURNEY, change(BEN_V1, previous=proposed)).action == "enroll"


@pytest.mark.parametrize("status", ["proposed", "pending", "cancelled", "fulfilled", "waitlist"])
def test_an_appointment_that_is_not_booked_is_ignored(status: str) -> None:
    decision = decide_new(JOURNEY, change({**BEN_V1, "status": status}))

    assert decision.action == "ignore"
    assert decision.anchor_at is None


def test_an_appointment_that_already_started_is_ignored() -> None:
    started = {**BEN_V1, "start": "2026-03-02T09:59:00Z", "end": "2026-03-02T10:20:00Z"}

    assert decide_new(JOURNEY, change(started)).action == "ignore"


def test_a_change_kind_not_in_trigger_on_is_ignored() -> None:
    text = SHIPPED.read_text().replace("on: [created, updated]", "on: [created]")
    created_only = parse_journey(text, "created-only.yaml")

    decision = decide_new(created_only, change(BEN_V1, previous={**BEN_V1, "status": "pending"}))

    assert decision.action == "ignore"
    assert "updated" in decision.reason and "trigger.on" in decision.reason
    assert decide_new(created_only, change(BEN_V1)).action == "enroll"


def test_other_resource_types_are_ignored() -> None:
    encounter = {
        "resourceType": "Encounter", "id": "e1", "status": "planned",
        "class": {"code": "AMB"}, "subject": {"reference": "Patient/ben"},
    }

    assert decide_new(JOURNEY, change(encounter)).action == "ignore"
    assert decide_enrolled(change(encounter)).action == "ignore"


@pytest.mark.parametrize("status", ["cancelled", "noshow", "entered-in-error"])
def test_an_enrolled_appointment_leaving_booked_is_cancelled(status: str) -> None:
    decision = decide_enrolled(change({**BEN_V1, "status": status}, previous=BEN_V1))

    assert decision.action == "cancel"


def test_a_cancellation_of_an_appointment_never_enrolled_is_ignored() -> None:
    cancelled = {**BEN_V1, "status": "cancelled"}

    assert decide_new(JOURNEY, change(cancelled, previous=BEN_V1)).action == "ignore"


def test_deleting_an_enrolled_appointment_cancels() -> None:
    deleted = change(None, previous=BEN_V1, kind=ChangeKind.DELETED)

    assert decide_enrolled(deleted).action == "cancel"
    assert decide_new(JOURNEY, deleted).action == "ignore"


def test_a_reschedule_replans_at_the_new_start() -> None:
    decision = decide_enrolled(change(BEN_V2, previous=BEN_V1))

    assert decision.action == "replan"
    assert decision.anchor_at == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "current",
    [
        BEN_V1,  # the same version delivered again
        {**BEN_V1, "comment": "Bring your glasses", "meta": {"versionId": "2"}},
        {**BEN_V1, "end": "2026-03-05T16:00:00Z", "meta": {"versionId": "2"}},
    ],
)
def test_an_enrolled_appointment_with_no_relevant_change_is_ignored(
    current: dict[str, Any],
) -> None:
    decision = decide_enrolled(change(current, previous=BEN_V1))

    assert decision.action == "ignore"
