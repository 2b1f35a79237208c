"""Patients' own words (English and Spanish), each a signed Twilio reply to a 72 h reminder really
sent by SMS, must land on the action a reasonable person would expect: opt-out, opt-in, confirm,
cancel, reschedule, help, a staff Task, or nothing — on the real API, Postgres and FHIR server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from channels.inbound import normalize
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import ContactConsent, InboundMessage, ScheduledStep, Writeback
from outreach.worker import jobs
from tests.outreach.replies.test_sms import CLINIC, MOBILE, NOW, _due_at, _fhir, clock, rt
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import TwilioServer, inbound_params, signed_post

__all__ = ["clock", "rt"]  # the fixtures, shared with test_sms
STRANGER = "+15555550999"  # a number we never texted
LONG = ("Hi, my mother has her appointment Tuesday and I want to ask about parking. " * 25)[:1600]
LARGO = ("Hola, mi madre tiene su cita el martes y quiero preguntar dónde estacionar. " * 25)[:1600]

# What the patient reads back, by outcome and the patient's language; None: an empty TwiML.
ANSWERS: dict[str, dict[str, str] | None] = {
    "stop": {"en": "no more text messages", "es": "No recibirá más mensajes"},
    "start": {"en": "text messages from St Example again", "es": "Volverá a recibir"},
    "confirm": {"en": "your appointment is confirmed", "es": "su cita está confirmada"},
    "cancel": {"en": "asked the clinic to cancel", "es": "pedido a la clínica que cancele"},
    "reschedule": {"en": "contact you to find a new time", "es": "para buscar otra hora"},
    "help": {"en": "appointment messages", "es": "mensajes sobre sus citas"},
    "text": None, "ambiguous": None, "empty": None,
}
# The staff Task an outcome queues (its description), if any.
TASKS = {"cancel": "Patient asked by SMS to cancel", "reschedule": "another time",
         "text": "free-text reply", "ambiguous": "could mean more than one thing"}


@dataclass(frozen=True)
class Row:
    body: str
    lang: str  # the patient's preferred language, and so of our answer
    expect: str  # a key of ANSWERS
    opted_out: bool = False  # the number sent STOP before this reply
    stranger: bool = False  # the reply comes from a number we never texted


def row(body: str, lang: str, expect: str, bug: str | None = None, **flags: bool) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    name = normalize(body)[:40].replace(" ", "_") or f"blank{len(body)}"
    tag = "".join(k[0] for k, v in flags.items() if v)
    return pytest.param(Row(body, lang, expect, **flags), marks=marks,
                        id=f"{lang}-{expect}{'-' + tag if tag else ''}-{name}")


PHRASINGS = [
    # Opt-out: the FCC's words alone and inside sentences, and other reasonable ways to say it.
    row("stop", "en", "stop"), row("STOP please", "en", "stop"),
    row("Please stop texting me", "en", "stop"), row("unsubscribe", "en", "stop"),
    row("quit", "en", "stop"), row("end", "en", "stop"), row("revoke", "en", "stop"),
    row("opt out", "en", "stop"), row("Cancel", "en", "stop"), row("no more texts", "en", "stop"),
    row("wrong number", "en", "stop"), row("BAJA", "es", "stop"), row("alto", "es", "stop"),
    row("No me envíen más mensajes", "es", "stop"), row("quiero darme de baja", "es", "stop"),
    row("cancelar", "es", "stop"), row("Número equivocado", "es", "stop"),
    row("Ya no quiero recibir mensajes", "es", "stop"), row("basta", "es", "stop"),
    row("No más mensajes por favor", "es", "stop"), row("STOP", "es", "stop"),
    row("ALTO por favor", "es", "stop"),
    row("Por favor dejen de enviarme mensajes", "es", "stop"),
    # Opt-in, and YES / Sí from an opted-out number.
    row("START", "en", "start", opted_out=True), row("unstop", "en", "start", opted_out=True),
    row("YES", "en", "start", opted_out=True), row("alta", "es", "start", opted_out=True),
    row("inicio", "es", "start", opted_out=True), row("Sí", "es", "start", opted_out=True),
    # Confirmations.
    row("Yes", "en", "confirm"), row("yep", "en", "confirm"), row("👍", "en", "confirm"),
    row("I'll be there", "en", "confirm"), row("see you then", "en", "confirm"),
    row("C", "en", "confirm"), row("Sí", "es", "confirm"), row("sí, ahí estaré", "es", "confirm"),
    row("confirmo", "es", "confirm"), row("de acuerdo", "es", "confirm"),
    row("Nos vemos", "es", "confirm"), row("Sí, confirmo", "es", "confirm"),
    row("Yes, thank you!", "en", "confirm"),
    row("Sí, gracias", "es", "confirm"),
    # Cancellations: a request to staff, never an opt-out.
    row("I need to cancel my appointment", "en", "cancel"), row("can't make it", "en", "cancel"),
    row("I won't be able to make it", "en", "cancel"), row("X", "en", "cancel"),
    row("no puedo ir", "es", "cancel"), row("quiero cancelar mi cita", "es", "cancel"),
    row("No voy a poder ir", "es", "cancel"),
    row("Lo siento, no puedo ir a la cita", "es", "cancel"),
    row("Cancel tomorrow's appointment", "en", "cancel"),
    row("Cancelen mi cita por favor", "es", "cancel"),
    # Another time.
    row("can we reschedule?", "en", "reschedule"), row("I need a different day", "en",
                                                       "reschedule"),
    row("Can I come another day?", "en", "reschedule"),
    row("¿puedo cambiar la cita?", "es", "reschedule"), row("otro día por favor", "es",
                                                            "reschedule"),
    row("¿Se puede reprogramar?", "es", "reschedule"), row("Necesito otra fecha", "es",
                                                           "reschedule"),
    # Help, free text, and replies that mean two things.
    row("HELP", "en", "help"), row("ayuda", "es", "help"), row("AYUDA", "es", "help"),
    row("Can I bring my daughter?", "en", "text"), row("I'll stop by the front desk first", "en",
                                                       "text"),
    row("¿Dónde estacionar?", "es", "text"), row("¿Puedo llevar a mi hija?", "es", "text"),
    row("¿Tengo que ayunar?", "es", "text"),
    row("I'll be there, or should I reschedule?", "en", "ambiguous"),
    row("Ahí estaré, ¿o mejor otro día?", "es", "ambiguous"),
    row("yes, or can we reschedule?", "en", "ambiguous"),
    # Bad inputs: nothing to read, emoji only, the longest SMS, mixed languages, a stranger.
    row("", "en", "empty"), row("   ", "es", "empty"), row("😀🙏", "en", "empty"),
    row("❤️", "es", "empty"), row(LONG, "en", "text"), row(LARGO, "es", "text"),
    row("Sí, I'll be there", "es", "confirm"), row("yes, ahí estaré", "en", "confirm"),
    row("no puedo ir, sorry", "en", "cancel"), row("STOP, no más mensajes", "es", "stop"),
    row("Who is this?", "en", "text", stranger=True), row("Yes", "en", "text", stranger=True),
    row("STOP", "en", "stop", stranger=True), row("BAJA", "es", "stop", stranger=True),
    row("¿Quién es?", "es", "text", stranger=True),
]


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiServer]:
    """One API server for the module (it serves whichever runtime a test installed)."""
    server = ApiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def twilio_server() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


@pytest.fixture
def twilio(twilio_server: TwilioServer) -> TwilioServer:
    """The module's Twilio-shaped server, emptied (stopping one per test costs half a second)."""
    state = twilio_server.state
    with state.lock:
        for kept in (state.messages, state.requests, state.script):
            kept.clear()
        state.unsubscribed.clear()
    return twilio_server


def _reminded(rt: Runtime, twilio: TwilioServer, clock: SimulatedClock,
              language: str = "en", email: str | None = None) -> tuple[str, dict[str, Any]]:
    """A fresh patient and appointment (the patient yet to accept), whose 72 h reminder went out
    by SMS: (Patient/id, appointment)."""
    pat, _ = _fhir(rt).create(patient(email=email, mobile=MOBILE, language=language))
    appt = appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5))
    appt["participant"][0]["status"] = "needs-action"
    appt, _ = _fhir(rt).create(appt)
    ingest(rt, appt, source="test")
    drain(rt)
    clock.set(_due_at(rt, "reminder-72h"))
    jobs.sweep(rt)
    drain(rt)
    with rt.sessions() as session:
        step = session.scalars(select(ScheduledStep).where(
            ScheduledStep.step_id == "reminder-72h")).one()
    assert (step.state, step.channel, twilio.messages[-1]["to"]) == ("sent", "sms", MOBILE)
    return f"Patient/{pat['id']}", appt


def _post(api: ApiServer, body: str, from_: str = MOBILE) -> tuple[str, str]:
    """A signed reply: (its MessageSid, our TwiML answer)."""
    form = inbound_params(from_, CLINIC, body)
    response = signed_post(f"{api.url}/channels/twilio/inbound", form)
    assert response.status_code == 200, response.text
    return form["MessageSid"], response.text


def _opted_out(rt: Runtime, address: str) -> bool | None:
    with rt.sessions() as session:
        return session.scalars(select(ContactConsent.opted_out).where(
            ContactConsent.address == address)).one_or_none()


def _writebacks(rt: Runtime, resource_type: str) -> list[dict[str, Any]]:
    with rt.sessions() as session:
        return list(session.scalars(select(Writeback.resource).where(
            Writeback.resource_type == resource_type)))


def _patient_status(rt: Runtime, appt: dict[str, Any], pid: str) -> str:
    stored = _fhir(rt).read("Appointment", appt["id"])
    assert stored["status"] == "booked"  # a reply never cancels it here: staff are asked
    return str(next(p["status"] for p in stored["participant"] if p["actor"]["reference"] == pid))


@pytest.mark.parametrize("case", PHRASINGS)
def test_each_phrasing_lands_on_the_intended_action(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, clock: SimulatedClock, case: Row
) -> None:
    pid, appt = _reminded(rt, twilio, clock, case.lang)
    sender = STRANGER if case.stranger else MOBILE
    if case.opted_out:
        _post(api_server, "STOP")
        drain(rt)
    sid, answer = _post(api_server, case.body, sender)
    drain(rt)
    with rt.sessions() as session:
        inbound = session.scalars(select(InboundMessage).where(
            InboundMessage.provider_message_id == sid)).one()
    assert inbound.body == case.body  # recorded, whatever it says
    assert inbound.intent == {"ambiguous": "text"}.get(case.expect, case.expect), inbound.rule
    assert inbound.rule and inbound.patient == (None if case.stranger else pid)
    assert inbound.rule.startswith("ambiguous") == (case.expect == "ambiguous")
    expected = ANSWERS[case.expect]
    assert (expected[case.lang] in answer) if expected else answer.endswith("<Response/>"), answer
    consent = {"stop": True, "start": False}.get(case.expect)
    assert _opted_out(rt, sender) is consent
    tasks = [t["description"] for t in _writebacks(rt, "Task")]
    assert len(tasks) == (case.expect in TASKS) and all(TASKS[case.expect] in t for t in tasks)
    replies = [c for c in _writebacks(rt, "Communication") if "received" in c]
    assert len(replies) == int(case.opted_out) + (case.expect != "empty")
    status = _patient_status(rt, appt, pid)
    assert status == ("accepted" if case.expect == "confirm" else "needs-action")
    assert all(m["to"] == MOBILE for m in twilio.messages)  # nothing sent to a stranger


def test_stop_and_start_are_written_back_as_consents_the_fhir_server_accepts(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, clock: SimulatedClock
) -> None:
    pid, _ = _reminded(rt, twilio, clock)

    def consents() -> list[dict[str, Any]]:
        return list(_fhir(rt).search("Consent", {"patient": pid, "_count": 10}))

    _post(api_server, "Please stop texting me")
    drain(rt)
    (deny,) = consents()
    assert deny["provision"]["type"] == "deny" and deny["status"] == "active"
    assert deny["policyRule"]["coding"][0]["code"] == "OPTOUT"
    assert deny["extension"][0]["valueContactPoint"] == {"system": "sms", "value": MOBILE}
    _post(api_server, "START")
    drain(rt)
    permit = next(c for c in consents() if c["id"] != deny["id"])
    assert permit["provision"]["type"] == "permit"
    assert permit["policyRule"]["coding"][0]["code"] == "OPTIN"
    assert len(consents()) == 2


@pytest.mark.parametrize("email", ["pat@example.org", None])
def test_after_stop_the_next_reminder_is_not_sent_by_sms(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, smtp: SmtpServer,
    clock: SimulatedClock, email: str | None
) -> None:
    _reminded(rt, twilio, clock, email=email)
    texts = len(twilio.messages)
    _post(api_server, "BAJA")
    drain(rt)
    clock.set(_due_at(rt, "reminder-24h"))
    jobs.sweep(rt)
    drain(rt)
    assert len(twilio.messages) == texts
    with rt.sessions() as session:
        step = session.scalars(select(ScheduledStep).where(
            ScheduledStep.step_id == "reminder-24h")).one()
    if email:
        assert (step.state, step.channel) == ("sent", "email")
        assert smtp.received[-1].rcpt_tos == [email]
    else:
        assert step.state == "skipped" and "opted out of sms" in (step.reason or "")
