"""An experiment on the real parts: a reminder sent in two variants to 30 patients booked in the
FHIR server, by SMS through the Twilio-shaped server; each patient gets the text of the variant
the hash assigns, kept on a retry and on their next appointment, and recorded on the delivery
attempt; replies by signed Twilio webhook, outcomes from the EHR; then the outcome report's
`experiments` with exactly the expected counts."""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from channels.lint import lint_template_file
from channels.templates import SHIPPED as SHIPPED_TEMPLATES
from connector.client import FhirClient
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.reports.experiments import p_value, wilson
from outreach.reports.service import outcome_report, period
from outreach.store.models import DeliveryAttempt, Enrollment, ScheduledStep, StepState
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
FIRST, LAST = NOW.date(), NOW.date() + timedelta(days=6)
CLINIC = "+15555550100"
JOURNEY_NAME = "reminder-experiment"
LONG, SHORT = "appointment-reminder", "appointment-reminder-short"
JOURNEY = f"""
journey: {JOURNEY_NAME}
trigger:
  resource: Appointment
  on: [created, updated]
  when: "status = 'booked' and start > now()"
anchor: start
cancel_when: "status in ('cancelled' | 'noshow' | 'entered-in-error')"
replan_on_change: [start]
steps:
  - {{id: booked, at: immediately, channel: [sms], template: appointment-booked,
     category: notification, cap_exempt: true}}
  - id: reminder-72h
    at: -72h
    channel: [sms]
    variants:
      - {{template: {LONG}, weight: 1}}
      - {{template: {SHORT}, weight: 1}}
    replies: {{C: confirm, X: cancel}}
"""
# The new variant, one file per language; each text says something the shipped one does not.
SHORT_TEXTS = {
    "en": "sms: '{{ first_name }}, see you {{ when }}. C to confirm, X to cancel. "
          "Reply STOP to opt out.'\n",
    "es": "sms: '{{ first_name }}, le esperamos el {{ when }}. C: confirmar, X: cancelar. "
          "Responda STOP para darse de baja.'\n",
}
# What tells the two variants' texts apart, by language.
MARKS = {(LONG, "en"): "Reminder: ", (LONG, "es"): "Recordatorio: ",
         (SHORT, "en"): ", see you ", (SHORT, "es"): ", le esperamos el "}
PATIENTS = [f"exp-{n:02d}" for n in range(30)]


def language(n: int) -> str:
    return "es" if n % 3 == 2 else "en"


def mobile(n: int) -> str:
    return f"+1555555{1000 + n}"


def expected_arm(pid: str) -> str:
    """docs/metrics.md: the first 8 bytes of SHA-256 of patient|journey|step, modulo the total
    weight (2), walk the variants in the order listed."""
    key = f"Patient/{pid}|{JOURNEY_NAME}|reminder-72h".encode()
    return (LONG, SHORT)[int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 2]


ARMS = {pid: expected_arm(pid) for pid in PATIENTS}


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, folder)
    for lang, text in SHORT_TEXTS.items():
        file = folder / lang / f"{SHORT}.yaml"
        file.write_text(text, encoding="utf-8")
        assert lint_template_file(file) == []
    return folder


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
       clock: SimulatedClock, api_server: ApiServer, tmp_path: Path,
       templates_dir: Path) -> Runtime:
    rules_dir = tmp_path / "journeys"
    rules_dir.mkdir()
    (rules_dir / "experiment.yaml").write_text(JOURNEY)
    return make_runtime(
        rules_dir=rules_dir, templates_dir=templates_dir, clock=clock,
        fhir_base_url=fhir.base_url, public_url=api_server.url, twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC, twilio_base_url=twilio.base_url,
        sms_rate_per_second=1000, timezone="UTC", organization_name="St Example")


def _fhir(rt: Runtime) -> FhirClient:
    assert isinstance(rt.ehr, FhirClient)
    return rt.ehr


def _book(rt: Runtime, pid: str, start: datetime) -> dict[str, Any]:
    created, _ = _fhir(rt).create(appointment(f"Patient/{pid}", start))
    ingest(rt, created, source="test")
    return created


def _send_due(rt: Runtime, clock: SimulatedClock, step_id: str) -> None:
    """Move the clock to each due step in turn (a retry is due a little later) until none of
    `step_id` is left to send."""
    while True:
        with rt.sessions() as session:
            due = session.scalars(select(ScheduledStep.due_at).where(
                ScheduledStep.step_id == step_id,
                ScheduledStep.state == StepState.SCHEDULED).order_by(ScheduledStep.due_at)).first()
        if due is None:
            return
        clock.set(max(due, clock.now()))
        jobs.sweep(rt)
        drain(rt)


def _attempts(rt: Runtime, step_id: str) -> dict[str, list[tuple[str, str | None]]]:
    """Per patient id, the (state, variant) of each attempt at `step_id`, in order."""
    with rt.sessions() as session:
        rows = session.execute(
            select(Enrollment.patient, DeliveryAttempt.state, DeliveryAttempt.variant)
            .join(ScheduledStep, ScheduledStep.id == DeliveryAttempt.step_id)
            .join(Enrollment, Enrollment.id == ScheduledStep.enrollment_id)
            .where(ScheduledStep.step_id == step_id)
            .order_by(DeliveryAttempt.id)).all()
    found: dict[str, list[tuple[str, str | None]]] = {}
    for patient_ref, state, variant in rows:
        found.setdefault(patient_ref.removeprefix("Patient/"), []).append((state, variant))
    return found


def _texts(twilio: TwilioServer, n: int) -> list[str]:
    return [str(m["body"]) for m in twilio.messages if m["to"] == mobile(n)]


def _reply(rt: Runtime, api: ApiServer, n: int, body: str) -> str:
    response = signed_post(f"{api.url}/channels/twilio/inbound",
                           inbound_params(mobile(n), CLINIC, body))
    assert response.status_code == 200, response.text
    drain(rt)
    return response.text


def _record_outcome(rt: Runtime, appt: dict[str, Any], status: str) -> None:
    current = _fhir(rt).read("Appointment", appt["id"])
    ingest(rt, _fhir(rt).update({**current, "status": status}), source="test")


def test_each_patient_gets_one_variant_and_the_report_compares_the_arms(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, clock: SimulatedClock
) -> None:
    long_arm = [n for n, pid in enumerate(PATIENTS) if ARMS[pid] == LONG]
    short_arm = [n for n, pid in enumerate(PATIENTS) if ARMS[pid] == SHORT]
    assert (len(long_arm), len(short_arm)) == (17, 13)  # fixed ids, so fixed arms

    booked = {}
    for n, pid in enumerate(PATIENTS):
        created = _fhir(rt).update(patient(pid, email=None, mobile=mobile(n),
                                           given=f"Pat{n}", language=language(n)))
        assert created["id"] == pid
        booked[pid] = _book(rt, pid, NOW + timedelta(days=5, minutes=10 * n))
    drain(rt)
    assert len(twilio.messages) == 30  # the booking confirmations: no experiment there

    # The first reminder request is refused by Twilio (500, transient): retried, same variant.
    twilio.fail_next((500, 20500))
    _send_due(rt, clock, "reminder-72h")

    attempts = _attempts(rt, "reminder-72h")
    retried = [pid for pid, tries in attempts.items() if len(tries) > 1]
    assert len(retried) == 1
    assert attempts[retried[0]] == [("failed", ARMS[retried[0]]), ("sent", ARMS[retried[0]])]
    for n, pid in enumerate(PATIENTS):
        assert attempts[pid][-1] == ("sent", ARMS[pid]), pid
        _, reminder = _texts(twilio, n)  # the booking confirmation, then the reminder
        assert MARKS[(ARMS[pid], language(n))] in reminder, (pid, reminder)
        assert f"Pat{n}" in reminder and "STOP" in reminder
        other = SHORT if ARMS[pid] == LONG else LONG
        assert MARKS[(other, language(n))] not in reminder
    # Steps without variants record none.
    assert {v for tries in _attempts(rt, "booked").values() for _, v in tries} == {None}

    # Two patients of the short arm confirm by reply (in English, answered in English).
    confirmers = [n for n in short_arm if language(n) == "en"][:2]
    assert len(confirmers) == 2
    for n in confirmers:
        assert "confirmed" in _reply(rt, api_server, n, "C")

    # The visits: every fourth missed, the next one attended, the rest still booked.
    clock.set(NOW + timedelta(days=8))
    outcomes = {0: "noshow", 1: "fulfilled"}
    for n, pid in enumerate(PATIENTS):
        if n % 4 in outcomes:
            _record_outcome(rt, booked[pid], outcomes[n % 4])
    drain(rt)

    # A later appointment of a patient from each arm: its reminder is in the same variant.
    again = {long_arm[0]: LONG, short_arm[0]: SHORT}
    for n in again:
        _book(rt, PATIENTS[n], clock.now() + timedelta(days=5))
    drain(rt)
    _send_due(rt, clock, "reminder-72h")
    later = _attempts(rt, "reminder-72h")
    for n, arm in again.items():
        assert later[PATIENTS[n]][-1] == ("sent", arm)
        assert MARKS[(arm, language(n))] in _texts(twilio, n)[-1]

    def arm_figures(members: list[int], confirmed: int) -> dict[str, Any]:
        no_show = sum(n % 4 == 0 for n in members)
        recorded = sum(n % 4 in outcomes for n in members)
        return {"appointments": len(members),
                "confirmation": {"successes": confirmed, "of": len(members),
                                 "rate": round(confirmed / len(members), 4),
                                 "ci95": wilson(confirmed, len(members))},
                "no_show": {"successes": no_show, "of": recorded,
                            "rate": round(no_show / recorded, 4),
                            "ci95": wilson(no_show, recorded)}}

    long_figures, short_figures = arm_figures(long_arm, 0), arm_figures(short_arm, 2)
    confirmation_p = p_value(2, len(short_arm), 0, len(long_arm))
    no_show_p = p_value(short_figures["no_show"]["successes"], short_figures["no_show"]["of"],
                        long_figures["no_show"]["successes"], long_figures["no_show"]["of"])
    short_figures["confirmation"].update(p_vs_first=confirmation_p,
                                         verdict="not yet significant")
    short_figures["no_show"].update(p_vs_first=no_show_p, verdict="not yet significant")

    # The later appointments start after the period: the report is about the first 30.
    result = outcome_report(rt, period(FIRST, LAST))
    assert result["appointments"] == 30 and result["confirmed"] == 2
    assert result["experiments"] == [{"journey": JOURNEY_NAME, "step": "reminder-72h",
                                      "arms": {LONG: long_figures, SHORT: short_figures}}]
    # 2 of 13 against none of 17: a difference, but not yet evidence at this size.
    assert confirmation_p is not None and 0.05 < confirmation_p < 0.2
