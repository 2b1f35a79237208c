"""Resource versions turned into ResourceChanges for the rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from connector.changes import classify, make_change, make_deletion, version_of
from rules import ChangeKind

DEMO = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "demo"


def demo(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEMO / name).read_text(encoding="utf-8"))
    return data


BEN_V1 = demo("12-appointment-ben-v1-booked.json")
BEN_V2 = demo("20-appointment-ben-v2-rescheduled.json")


def test_first_sight_of_a_resource_is_created() -> None:
    change = make_change(BEN_V1, None, source="rest-hook")

    assert change.kind is ChangeKind.CREATED
    assert (change.reference, change.version_id) == ("Appointment/appt-ben", "1")
    assert change.current is BEN_V1 and change.previous is None
    assert change.last_updated == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert change.source == "rest-hook"


def test_a_newer_version_is_updated_and_keeps_the_previous_one() -> None:
    change = make_change(BEN_V2, BEN_V1, source="poll")

    assert change.kind is ChangeKind.UPDATED
    assert change.version_id == "2"
    assert change.previous is BEN_V1
    assert change.resource is BEN_V2


def test_version_id_is_opaque() -> None:
    uuid = "2f1c0c5e-8f9b-4a4e-9d55-0b8d7c9a1e33"
    resource = {**BEN_V1, "meta": {"versionId": uuid, "lastUpdated": "2026-03-02T10:00:00Z"}}

    assert make_change(resource, None, "poll").version_id == uuid


def test_last_updated_is_aware_utc_whatever_the_offset() -> None:
    resource = {**BEN_V1, "meta": {"versionId": "3",
                                   "lastUpdated": "2026-03-02T12:00:00.250+02:00"}}

    version, updated = version_of(resource)

    assert version == "3"
    assert updated == datetime(2026, 3, 2, 10, 0, 0, 250000, tzinfo=UTC)
    assert updated is not None and updated.utcoffset() is not None
    assert updated.tzinfo is UTC


def test_a_resource_without_meta_still_gets_a_version() -> None:
    bare = {k: v for k, v in BEN_V1.items() if k != "meta"}

    assert version_of(bare) == (None, None)
    assert make_change(bare, None, "poll").version_id == "unversioned"


def test_a_deletion_keeps_the_last_version_seen() -> None:
    when = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)

    change = make_deletion("Appointment", "appt-ben", BEN_V2, when, "rest-hook")

    assert change.kind is ChangeKind.DELETED
    assert change.current is None
    assert change.resource is BEN_V2
    assert change.version_id == f"deleted@{when.isoformat()}"


# -- classification ------------------------------------------------------------------------------


def test_classification_names_what_moved_and_the_status_transition() -> None:
    moved = make_change(BEN_V2, BEN_V1, source="poll")

    assert "rescheduled" in moved.changes and "start" in moved.changes
    assert "status" not in moved.changes
    assert moved.status_from == moved.status_to == "booked"

    cancelled = {**BEN_V2, "status": "cancelled",
                 "meta": {"versionId": "3", "lastUpdated": "2026-03-03T10:00:00Z"}}
    change = make_change(cancelled, BEN_V2, source="poll")
    assert change.changes == {"status"}
    assert (change.status_from, change.status_to) == ("booked", "cancelled")


def test_participant_change_is_named() -> None:
    other = {**BEN_V1, "participant": [*BEN_V1["participant"][:1],
                                       {"actor": {"reference": "Practitioner/new"},
                                        "status": "accepted"}]}

    assert classify(BEN_V1, other).changes == {"participant"}


def test_meta_and_narrative_only_is_no_change() -> None:
    touched = {**BEN_V1, "meta": {"versionId": "9", "lastUpdated": "2026-03-09T00:00:00Z",
                                  "security": [{"code": "HTEST"}]},
               "text": {"status": "generated", "div": "<div>x</div>"}}

    found = classify(BEN_V1, touched)

    assert found.meta_only and found.changes == frozenset()


def test_the_same_instant_in_another_offset_is_not_a_reschedule() -> None:
    start = BEN_V1["start"]
    assert start.endswith("Z")
    shifted = {**BEN_V1, "start": rules_instant_in_plus_one(start)}

    assert classify(BEN_V1, shifted).meta_only


def rules_instant_in_plus_one(value: str) -> str:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(timezone(timedelta(hours=1))).isoformat()


def test_created_and_deleted_are_classified() -> None:
    created = make_change(BEN_V1, None, source="poll")
    assert created.changes == {"created"} and created.status_to == "booked"

    deleted = make_deletion("Appointment", "appt-ben", BEN_V2, datetime.now(UTC), "rest-hook")
    assert deleted.changes == {"deleted"} and deleted.status_from == "booked"
