"""Triggers beyond created/updated: status transitions, reschedules, %previous, Encounters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rules import ChangeKind, ResourceChange, decide
from rules.loader import LoadedJourney, parse_journey

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
APPT: dict[str, Any] = {
    "resourceType": "Appointment", "id": "a1", "status": "booked",
    "start": "2026-03-10T15:00:00Z", "end": "2026-03-10T15:30:00Z",
    "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
}
ENC: dict[str, Any] = {
    "resourceType": "Encounter", "id": "e1", "status": "in-progress", "class": {"code": "AMB"},
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2026-03-02T08:00:00Z", "end": "2026-03-02T09:00:00Z"},
}


def journey(trigger: str, anchor: str = "", steps: str = "") -> LoadedJourney:
    text = (f"journey: j\ntrigger:\n{trigger}\n{anchor}"
            "steps:\n" + (steps or "  - {id: s, at: immediately, channel: sms, template: t}\n"))
    return parse_journey(text, "j.yaml")


def change(current: dict[str, Any] | None, previous: dict[str, Any] | None = None
           ) -> ResourceChange:
    resource = current or previous
    assert resource is not None
    kind = (ChangeKind.DELETED if current is None
            else ChangeKind.CREATED if previous is None else ChangeKind.UPDATED)
    return ResourceChange(resource["resourceType"], resource["id"], "2", kind, current, previous)


def action(j: LoadedJourney, ch: ResourceChange) -> str:
    return decide(j, ch, NOW, enrolled_anchor=None, enrolled=False).action


NOSHOW = journey("  resource: Appointment\n  on: [{status: {from: booked, to: noshow}}]",
                 "anchor: trigger\n")


def test_a_status_transition_fires_only_from_to_the_listed_codes() -> None:
    noshow = {**APPT, "status": "noshow"}
    assert action(NOSHOW, change(noshow, APPT)) == "enroll"
    assert action(NOSHOW, change(noshow, {**APPT, "status": "arrived"})) == "ignore"
    assert action(NOSHOW, change(noshow)) == "ignore"  # created as noshow: no `from`
    assert action(NOSHOW, change(noshow, noshow)) == "ignore"  # no transition


def test_status_to_without_from_also_matches_a_creation() -> None:
    j = journey("  resource: Appointment\n  on: [{status: {to: [booked, arrived]}}]")
    assert action(j, change(APPT)) == "enroll"
    assert action(j, change(APPT, {**APPT, "status": "proposed"})) == "enroll"
    assert action(j, change(APPT, APPT)) == "ignore"


def test_the_decision_says_which_transition_matched() -> None:
    decision = decide(NOSHOW, change({**APPT, "status": "noshow"}, APPT), NOW, None, False)
    assert decision.reason == "trigger matched: status booked → noshow"
    assert decision.anchor_at == NOW


def test_rescheduled_fires_when_the_start_moves_as_an_instant() -> None:
    j = journey("  resource: Appointment\n  on: [rescheduled]")
    moved = {**APPT, "start": "2026-03-11T15:00:00Z"}
    same_instant = {**APPT, "start": "2026-03-10T16:00:00+01:00"}
    assert action(j, change(moved, APPT)) == "enroll"
    assert action(j, change(same_instant, APPT)) == "ignore"
    assert action(j, change(APPT)) == "ignore"


def test_when_can_compare_previous_and_current() -> None:
    j = journey("  resource: Appointment\n  on: [updated]\n"
                "  when: \"%previous.start.exists() and %previous.start != %current.start\"")
    assert action(j, change({**APPT, "start": "2026-03-12T15:00:00Z"}, APPT)) == "enroll"
    assert action(j, change({**APPT, "comment": "x"}, APPT)) == "ignore"


def test_an_encounter_finishing_enrolls_at_the_period_end() -> None:
    j = journey("  resource: Encounter\n  on: [{status: {to: finished}}]",
                steps="  - {id: s, at: +1d, channel: sms, template: t}\n")
    assert j.spec.anchor == "period.end"  # the default anchor for an Encounter
    finished = {**ENC, "status": "finished"}
    decision = decide(j, change(finished, ENC), NOW, None, False)
    assert decision.action == "enroll"
    assert decision.anchor_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_an_encounter_without_an_end_is_not_enrolled() -> None:
    j = journey("  resource: Encounter\n  on: [{status: {to: finished}}]")
    finished = {**ENC, "status": "finished", "period": {"start": "2026-03-02T08:00:00Z"}}
    decision = decide(j, change(finished, ENC), NOW, None, False)
    assert (decision.action, decision.reason) == ("ignore", "resource has no period.end")


@pytest.mark.parametrize("kind", ["created", "updated"])
def test_plain_kinds_still_work(kind: str) -> None:
    j = journey(f"  resource: Appointment\n  on: [{kind}]")
    created, updated = change(APPT), change(APPT, {**APPT, "status": "pending"})
    assert action(j, created) == ("enroll" if kind == "created" else "ignore")
    assert action(j, updated) == ("enroll" if kind == "updated" else "ignore")
