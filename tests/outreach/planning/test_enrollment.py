"""Planning on Postgres, called directly: what enrolling, re-planning and cancelling write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from connector.changes import make_change
from outreach import SHIPPED_JOURNEYS
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.planning.enrollment import Planning, apply_journeys, enroll_resource, patient_zone
from outreach.planning.outcomes import JourneyOutcome, due_now, queue_for_outcomes
from outreach.store.db import transaction
from outreach.store.models import Enrollment, ScheduledStep, StepState, Writeback
from rules import JourneySet, load_journeys
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment, patient

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
START = NOW + timedelta(days=5)
SYSTEM = "urn:fhir-outreach:step"
NEW_YORK = ZoneInfo("America/New_York")

# A capped (SMS, not exempt) message as soon as an appointment is booked.
SMS_NUDGE = """
journey: sms-nudge
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: start
steps:
  - {id: nudge, at: immediately, channel: [sms], template: appointment-reminder}
"""
# Fails on every appointment with more than one participant: startsWith wants one string.
PICKY = """
journey: picky
trigger:
  resource: Appointment
  on: [created, updated]
  when: "participant.actor.reference.startsWith('Patient/')"
anchor: start
steps:
  - {id: nudge, at: -24h, channel: [sms], template: appointment-reminder}
"""


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime(clock=SimulatedClock(NOW))


def _journeys(tmp_path: Path, text: str) -> JourneySet:
    (tmp_path / "journey.yaml").write_text(text)
    return load_journeys(tmp_path / "journey.yaml")


def _appt(v: int, start: datetime = START, status: str = "booked", aid: str = "a1",
          pid: str = "p1") -> dict[str, Any]:
    return appointment(f"Patient/{pid}", start, aid=aid, status=status, version=str(v),
                       updated=NOW + timedelta(minutes=v))


def _utc(_patient: str) -> ZoneInfo:
    return ZoneInfo("UTC")


def _apply(rt: Runtime, current: dict[str, Any], previous: dict[str, Any] | None = None,
           journeys: JourneySet | None = None, now: datetime = NOW) -> list[JourneyOutcome]:
    with transaction(rt.sessions) as session:
        change = make_change(current, previous, "test")
        return apply_journeys(session, journeys or rt.journeys, change, now, _utc)


def _steps(rt: Runtime) -> dict[str, ScheduledStep]:
    with rt.sessions() as session:
        return {s.step_id: s for s in session.scalars(select(ScheduledStep))}


def _mark_sent(rt: Runtime, step_id: str, at: datetime) -> None:
    with transaction(rt.sessions) as session:
        session.execute(update(ScheduledStep).where(ScheduledStep.step_id == step_id)
                        .values(state=StepState.SENT, sent_at=at, channel="sms"))


def test_a_booked_future_appointment_gets_one_step_per_journey_step(rt: Runtime) -> None:
    (outcome,) = _apply(rt, _appt(1))
    assert (outcome.journey, outcome.action) == ("appointment-reminders", "enroll")
    assert {s.step_id: (s.state, s.due_at) for s in outcome.steps} == {
        "booked": (StepState.QUEUED, NOW),
        "reminder-72h": (StepState.SCHEDULED, START - timedelta(hours=72)),
        "reminder-24h": (StepState.SCHEDULED, START - timedelta(hours=24)),
        "reminder-2h": (StepState.SCHEDULED, START - timedelta(hours=2)),
    }
    with rt.sessions() as session:
        enrollment = session.scalars(select(Enrollment)).one()
    assert (enrollment.patient, enrollment.anchor_at, enrollment.state) == (
        "Patient/p1", START, "active")


def test_due_now_lists_only_the_queued_confirmation(rt: Runtime) -> None:
    outcomes = _apply(rt, _appt(1))
    assert due_now(outcomes) == [_steps(rt)["booked"].id]


def test_a_reschedule_replans_pending_steps_and_leaves_sent_ones(rt: Runtime) -> None:
    _apply(rt, _appt(1))
    _mark_sent(rt, "booked", NOW)
    moved = START + timedelta(days=2, hours=3)

    (outcome,) = _apply(rt, _appt(2, moved), previous=_appt(1))

    assert outcome.action == "replan"
    assert sorted(s.step_id for s in outcome.steps) == [
        "reminder-24h", "reminder-2h", "reminder-72h"]
    steps = _steps(rt)
    assert (steps["booked"].state, steps["booked"].due_at) == (StepState.SENT, NOW)
    assert steps["reminder-72h"].due_at == moved - timedelta(hours=72)
    assert steps["reminder-2h"].due_at == moved - timedelta(hours=2)
    assert len(steps) == 4


def test_a_cancellation_cancels_pending_steps_and_the_enrollment(rt: Runtime) -> None:
    _apply(rt, _appt(1))
    _mark_sent(rt, "booked", NOW)

    (outcome,) = _apply(rt, _appt(2, status="cancelled"), previous=_appt(1))

    assert outcome.action == "cancel"
    assert {s.step_id: s.state for s in _steps(rt).values()} == {
        "booked": StepState.SENT, "reminder-72h": StepState.CANCELLED,
        "reminder-24h": StepState.CANCELLED, "reminder-2h": StepState.CANCELLED}
    with rt.sessions() as session:
        enrollment = session.scalars(select(Enrollment)).one()
    assert enrollment.state == "cancelled"
    assert "cancel_when matched" in (enrollment.reason or "")


def test_a_cancelled_enrollment_is_never_enrolled_again(rt: Runtime) -> None:
    _apply(rt, _appt(1))
    _apply(rt, _appt(2, status="cancelled"), previous=_appt(1))

    (rebooked,) = _apply(rt, _appt(3), previous=_appt(2, status="cancelled"))
    (first_sight,) = _apply(rt, _appt(4))  # as if the stored version had been lost

    assert [(o.action, o.reason) for o in (rebooked, first_sight)] == [
        ("ignore", "enrollment cancelled")] * 2
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 1
    assert all(s.state == StepState.CANCELLED for s in _steps(rt).values())


def test_a_condition_failing_in_one_journey_does_not_stop_another(
    rt: Runtime, tmp_path: Path
) -> None:
    journeys = JourneySet([*_journeys(tmp_path, PICKY).journeys, *rt.journeys.journeys])

    outcomes = _apply(rt, _appt(1), journeys=journeys)

    assert {o.journey: o.action for o in outcomes} == {
        "picky": "error", "appointment-reminders": "enroll"}
    with rt.sessions() as session:
        assert list(session.scalars(select(Enrollment.journey))) == ["appointment-reminders"]


def test_a_text_sent_earlier_today_pushes_the_next_one_to_tomorrow(
    rt: Runtime, tmp_path: Path
) -> None:
    journeys = _journeys(tmp_path, SMS_NUDGE)
    _apply(rt, _appt(1, aid="a1"), journeys=journeys, now=NOW - timedelta(hours=9))
    _mark_sent(rt, "nudge", NOW - timedelta(hours=9))  # 03:00 UTC today

    (outcome,) = _apply(rt, _appt(1, aid="a2"), journeys=journeys)

    (step,) = outcome.steps
    assert (step.state, step.due_at) == (StepState.SCHEDULED, NOW + timedelta(days=1))


def test_the_cap_counts_days_in_the_patients_own_time_zone(
    rt: Runtime, tmp_path: Path
) -> None:
    journeys = _journeys(tmp_path, SMS_NUDGE)
    ingest(rt, {**patient("p1"), "extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/timezone",
         "valueCode": "America/New_York"}]}, source="test")
    _apply(rt, _appt(1, aid="a1"), journeys=journeys, now=NOW - timedelta(hours=9))
    _mark_sent(rt, "nudge", NOW - timedelta(hours=9))  # 22:00 yesterday in New York

    (outcome,) = _apply(rt, _appt(1, aid="a2"), journeys=journeys)

    (step,) = outcome.steps
    assert (step.state, step.due_at) == (StepState.QUEUED, NOW)


def test_patient_zone_prefers_the_ingested_record_over_the_fallback(rt: Runtime) -> None:
    ingest(rt, {**patient("p1"), "extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/timezone",
         "valueCode": "America/New_York"}]}, source="test")
    with rt.sessions() as session:
        assert patient_zone(session, "Patient/p1", _utc) == NEW_YORK
        assert patient_zone(session, "Patient/unknown", _utc) == ZoneInfo("UTC")


def test_a_replan_counts_the_enrollments_own_sent_texts_toward_the_cap(rt: Runtime) -> None:
    _apply(rt, _appt(1))
    sent_at = START - timedelta(hours=72)
    _mark_sent(rt, "reminder-72h", sent_at)
    # Moved earlier, half an hour after the 72 h text went: the 24 h reminder now falls on the
    # same day, and a second text that day would break the one-a-day cap.
    moved = START - timedelta(hours=46)

    later = sent_at + timedelta(minutes=30)

    (outcome,) = _apply(rt, _appt(2, moved), previous=_appt(1), now=later)

    assert outcome.action == "replan"
    reminder = _steps(rt)["reminder-24h"]
    assert reminder.due_at.date() != sent_at.date() or reminder.state == StepState.SKIPPED, (
        f"second text planned on {reminder.due_at} after one sent at {sent_at}")


def test_a_replan_does_not_count_a_sent_text_again_at_its_new_time(rt: Runtime) -> None:
    _apply(rt, _appt(1))
    sent_at = START - timedelta(hours=72)
    _mark_sent(rt, "reminder-72h", sent_at)
    # Moved a day later just after the 72 h text went: that text is not sent again, so it must
    # not take one of the week's three texts from the 2 h reminder.
    moved = START + timedelta(days=1)

    (outcome,) = _apply(rt, _appt(2, moved), previous=_appt(1),
                        now=sent_at + timedelta(minutes=5))

    assert outcome.action == "replan"
    steps = _steps(rt)
    assert (steps["reminder-24h"].state, steps["reminder-24h"].due_at) == (
        StepState.SCHEDULED, moved - timedelta(hours=24))
    assert (steps["reminder-2h"].state, steps["reminder-2h"].due_at) == (
        StepState.SCHEDULED, moved - timedelta(hours=2))


def test_enroll_resource_enrolls_once_per_cycle(rt: Runtime) -> None:
    journeys = load_journeys(SHIPPED_JOURNEYS / "library" / "birthday-greeting.yaml")
    (birthday,) = journeys.journeys
    planning = Planning(_utc, journeys)
    resource = {**patient("p1"), "birthDate": "1980-03-02"}

    with transaction(rt.sessions) as session:
        outcomes = [enroll_resource(session, birthday, resource, NOW, planning, cycle, "run")
                    for cycle in ("2026", "2026", "2027")]

    assert [o.action for o in outcomes] == ["enroll", "ignore", "enroll"]
    assert outcomes[1].reason == "already enrolled for cycle '2026'"
    (greeting,) = outcomes[0].steps
    assert (greeting.state, greeting.due_at) == (StepState.QUEUED, NOW)
    with rt.sessions() as session:
        assert sorted(session.scalars(select(Enrollment.cycle))) == ["2026", "2027"]


def test_queue_for_outcomes_makes_one_active_request_per_planned_step(rt: Runtime) -> None:
    with transaction(rt.sessions) as session:
        outcomes = apply_journeys(session, rt.journeys, make_change(_appt(1), None, "test"),
                                  NOW, _utc)
        ids = queue_for_outcomes(session, SYSTEM, rt.journeys, outcomes, NOW)
    with rt.sessions() as session:
        rows = list(session.scalars(select(Writeback).where(Writeback.id.in_(ids))))
    assert len(rows) == 4
    assert {r.resource_type for r in rows} == {"CommunicationRequest"}
    assert {r.resource["status"] for r in rows} == {"active"}
    uids = {s.uid for s in _steps(rt).values()}
    assert {r.identifier for r in rows} == {f"{SYSTEM}|request-{uid}" for uid in uids}


def test_a_cancellation_revokes_the_requests_of_the_cancelled_steps(rt: Runtime) -> None:
    with transaction(rt.sessions) as session:
        enrolled = apply_journeys(session, rt.journeys, make_change(_appt(1), None, "test"),
                                  NOW, _utc)
        queue_for_outcomes(session, SYSTEM, rt.journeys, enrolled, NOW)
    _mark_sent(rt, "booked", NOW)

    with transaction(rt.sessions) as session:
        change = make_change(_appt(2, status="cancelled"), _appt(1), "test")
        cancelled = apply_journeys(session, rt.journeys, change, NOW, _utc)
        ids = queue_for_outcomes(session, SYSTEM, rt.journeys, cancelled, NOW)

    with rt.sessions() as session:
        rows = list(session.scalars(select(Writeback)))
    assert len(rows) == 4  # the cancelled steps' requests are updated, not duplicated
    revoked = [r for r in rows if r.id in ids]
    assert len(revoked) == 3
    assert all(r.resource["status"] == "revoked" and r.operation == "upsert" for r in revoked)
    assert all("cancel_when" in r.resource["statusReason"]["text"] for r in revoked)
    booked_uid = _steps(rt)["booked"].uid
    (kept,) = [r for r in rows if r.id not in ids]
    assert kept.identifier.endswith(booked_uid) and kept.resource["status"] == "active"
