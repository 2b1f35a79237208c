"""The timeline query and page: grouped by appointment, newest first, one patient only, and
every value escaped. Rows are written directly here; test_browser.py produces them end to end."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from outreach.core.ports import Runtime
from outreach.staff.smart import load_timeline
from outreach.store.db import transaction
from outreach.store.models import (
    ContactConsent,
    DeliveryAttempt,
    Enrollment,
    InboundMessage,
    ScheduledStep,
    StepState,
    Writeback,
)
from tests.conftest import RuntimeFactory
from tests.outreach.staff.smart.conftest import PATIENT_ID
from tests.support.smart_auth_server import SmartAuthServer, ehr_sign_in

T0 = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)
ME, OTHER = f"Patient/{PATIENT_ID}", "Patient/someone-else"
JOURNEY = """
journey: reminders
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: start
steps:
  - {id: booked, at: immediately, channel: [email, sms], template: appointment-booked}
  - {id: reminder-24h, at: -24h, channel: [sms, email], template: appointment-reminder}
"""


@pytest.fixture
def rt(make_runtime: RuntimeFactory, smart_settings: dict[str, object], tmp_path: Path
       ) -> Runtime:
    (tmp_path / "reminders.yaml").write_text(JOURNEY)
    return make_runtime(rules_dir=tmp_path, timezone="Europe/Berlin", **smart_settings)


def _enroll(rt: Runtime, patient: str, appointment: str, start: datetime,
            steps: list[tuple[str, StepState, datetime]]) -> list[int]:
    with transaction(rt.sessions) as session:
        enrollment = Enrollment(journey="reminders", journey_version="1", patient=patient,
                                resource_type="Appointment", resource_id=appointment,
                                anchor_at=start, created_at=T0, updated_at=T0)
        session.add(enrollment)
        session.flush()
        rows = [ScheduledStep(enrollment_id=enrollment.id, step_id=step_id, due_at=at,
                              state=state, updated_at=at,
                              channel="sms" if state == StepState.SENT else None,
                              sent_at=at if state == StepState.SENT else None,
                              reason="opted out of sms" if state == StepState.SKIPPED else None)
                for step_id, state, at in steps]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def _seed(rt: Runtime) -> None:
    old = _enroll(rt, ME, "a-old", T0 - timedelta(days=30),
                  [("booked", StepState.SENT, T0 - timedelta(days=40))])
    new = _enroll(rt, ME, "a-new", T0 + timedelta(days=3),
                  [("booked", StepState.SENT, T0),
                   ("reminder-24h", StepState.SCHEDULED, T0 + timedelta(days=2))])
    _enroll(rt, OTHER, "a-other", T0, [("booked", StepState.SENT, T0)])
    with transaction(rt.sessions) as session:
        session.add_all([
            DeliveryAttempt(step_id=new[0], attempt=1, channel="sms", address="+15555550100",
                            state="failed", error="timeout", started_at=T0),
            DeliveryAttempt(step_id=new[0], attempt=2, channel="sms", address="+15555550100",
                            state="sent", provider_status="delivered", started_at=T0),
            DeliveryAttempt(step_id=old[0], attempt=1, channel="sms", address="+15555550100",
                            state="sent", provider_status="undelivered", error_code="30003",
                            started_at=T0),
            InboundMessage(provider="twilio", provider_message_id="SM1", from_address="+1555",
                           to_address="+1666", body="<script>alert('x')</script> ok?",
                           received_at=T0 + timedelta(hours=1), patient=ME,
                           in_reply_to_step=new[0], intent="text", outcome="staff task"),
            ContactConsent(channel="sms", address="+15555550100", patient=ME, opted_out=True,
                           source="keyword", changed_at=T0 + timedelta(hours=2)),
            ContactConsent(channel="sms", address="+15555550199", patient=OTHER,
                           opted_out=True, source="keyword", changed_at=T0),
        ])
        for key, patient, status in (("t1", ME, "requested"), ("t2", ME, "completed"),
                                     ("t3", OTHER, "requested")):
            session.add(Writeback(
                resource_type="Task", identifier=f"urn:x|{key}", state="done",
                next_attempt_at=T0, created_at=T0, resource={
                    "resourceType": "Task", "status": status, "intent": "order",
                    "priority": "urgent", "description": f"Call back <b>{key}</b>",
                    "authoredOn": "2030-03-04T13:00:00Z", "for": {"reference": patient},
                    "focus": {"reference": "Appointment/a-new"}}))


def test_grouped_by_appointment_newest_first_and_only_this_patient(rt: Runtime) -> None:
    _seed(rt)
    with rt.sessions() as session:
        timeline = load_timeline(session, rt.journeys, ME)
    assert [g.reference for g in timeline.groups] == ["Appointment/a-new", "Appointment/a-old"]
    newest = timeline.groups[0]
    assert [(e.kind, e.title) for e in newest.entries] == [
        ("scheduled", "reminder-24h"), ("reply", "Reply"), ("sent", "booked")]
    scheduled, _reply, sent = newest.entries
    assert scheduled.channels == ("sms", "email")  # from the journey: in order of preference
    assert (sent.channels, sent.status) == (("sms",), "delivered")  # the last attempt's
    old = timeline.groups[1].entries[0]
    assert (old.status, old.detail) == ("undelivered", "provider error 30003")
    assert [(c.channel, c.opted_out, c.address_hint) for c in timeline.consents] == [
        ("sms", True, "…0100")]
    assert [t.description for t in timeline.tasks] == ["Call back <b>t1</b>"]  # open, mine


def test_the_page_escapes_what_patients_and_staff_wrote(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    _seed(rt)
    assert ehr_sign_in(client, auth).status_code == 303
    page = client.get("/smart/timeline")
    assert page.status_code == 200
    assert "<script>" not in page.text and "<b>t1</b>" not in page.text
    text = html.unescape(page.text)
    assert "<script>alert('x')</script> ok?" in text and "Call back <b>t1</b>" in text
    # Not the other patient's task (a bare "t3" can turn up in the page's random tokens).
    assert "Opted out of SMS" in text and "<b>t3</b>" not in text and "a-other" not in text
    assert "Wed 06 Mar 2030, 13:00 CET" in text  # the 24 h reminder, in the clinic's zone
    assert "script-src" not in page.headers["content-security-policy"]  # so: no scripts
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_patient_with_no_outreach_sees_an_empty_timeline(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    assert ehr_sign_in(client, auth).status_code == 303
    page = client.get("/smart/timeline")
    assert page.status_code == 200
    assert "No outreach recorded for this patient." in page.text
    assert "No opt-outs recorded." in page.text
