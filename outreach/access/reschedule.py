"""Reschedule by reply: a patient who asks for another time is offered up to a few free Slots of
the same practitioner, location and service type, inside their stated availability, numbered;
their number books it in the EHR (If-Match on the Slot and the Appointment), and intake then
re-plans the reminders for the new time. No time free, a time taken meanwhile, an appointment
changed meanwhile: the patient is told, and staff get a Task where a person must step in."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from connector.errors import FhirError
from connector.scheduling import (
    AppointmentChanged,
    SlotOption,
    SlotTaken,
    appointment_like,
    query_for,
)
from outreach.access import options as shown
from outreach.access.availability import admits_for
from outreach.access.ehr import scheduler
from outreach.access.outcome import OfferReply
from outreach.access.texts import answer_language, say
from outreach.core.ports import Runtime
from outreach.store import offers
from outreach.store.db import transaction
from outreach.store.models import SlotOffer
from rules.schema import Reschedule

log = logging.getLogger(__name__)

NO_TIME_TASK = "Patient asked by SMS for another time for this appointment; no free time could " \
               "be offered, please find one."


def _start(appointment: dict[str, object]) -> datetime | None:
    value = appointment.get("start")
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _find(rt: Runtime, appointment: dict[str, object], patient: str, zone: ZoneInfo,
          spec: Reschedule, exclude: frozenset[str] = frozenset()) -> list[SlotOption]:
    assert rt.ehr is not None
    now = rt.clock.now()
    query = query_for(appointment, earliest=now + spec.duration("lead_time"),
                      latest=now + spec.duration("horizon"),
                      admits=admits_for(rt, patient, zone), limit=spec.options)
    if exclude:
        query = replace(query, exclude=query.exclude | exclude)
    return scheduler(rt).find(query)


def _stored(found: list[SlotOption], zone: ZoneInfo, spec: Reschedule) -> dict[str, object]:
    """The options, with what a re-offer needs (the patient's zone, the journey's settings)."""
    return {**shown.stored(found, zone), "spec": spec.model_dump()}


def _open(rt: Runtime, offer: SlotOffer, found: list[SlotOption], zone: ZoneInfo,
          spec: Reschedule, lead: str | None = None) -> str:
    """Store the offer, open for the journey's hold; the text that offers its times."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        offer.uid, offer.state, offer.created_at = offers.new_uid(), "open", now
        offer.options, offer.expires_at = _stored(found, zone, spec), now + spec.duration("hold")
        session.add(offer)
        session.flush()
        return _options_text(rt, offer, found, zone, lead)


def _options_text(rt: Runtime, offer: SlotOffer, found: list[SlotOption], zone: ZoneInfo,
                  lead: str | None = None) -> str:
    link = rt.settings.offer_link(offer.uid, offer.language, rt.clock.now(), offer.expires_at)
    text = say(rt, offer.language, "offer_options",
               options=shown.numbered(found, zone, offer.language),
               link=say(rt, offer.language, "offer_link", url=link) if link else "")
    return f"{lead} {text}" if lead else text


def offer_times(rt: Runtime, *, patient: str, appointment: str, address: str,
                language: str | None, zone: ZoneInfo, spec: Reschedule,
                kind: str = "reschedule") -> OfferReply:
    """Find times and offer them; nothing found (or no EHR to ask) → staff find one. `kind`
    `book`: `appointment` is what a new appointment follows (a visit, an Appointment), and the
    time chosen becomes a new Appointment."""
    language = answer_language(language)
    none = OfferReply("new time requested; none free, staff asked",
                      say(rt, language, "offer_none"), NO_TIME_TASK)
    if rt.ehr is None:
        return none
    rtype, _, rid = appointment.partition("/")
    try:
        current = rt.ehr.read(rtype, rid)
        found = _find(rt, appointment_like(current), patient, zone, spec)
    except FhirError as exc:
        log.warning("finding times for %s failed: %s", appointment, exc.status)
        return none
    if not found:
        return none
    offer = SlotOffer(
        kind=kind, patient=patient, appointment=appointment,
        appointment_version=(current.get("meta") or {}).get("versionId"),
        original_start=_start(current) if kind == "reschedule" else None, address=address,
        language=language)
    text = _open(rt, offer, found, zone, spec)
    log.info("offer %s: %d times for %s", offer.id, len(found), appointment)
    return OfferReply(f"new time requested; {len(found)} times offered", text,
                      next_offer=offer.uid)


def choose(rt: Runtime, offer: SlotOffer, number: int, zone: ZoneInfo,
           spec: Reschedule) -> OfferReply:
    """Book option `number` (1-based) of the offer."""
    found = shown.loaded(offer.options)
    language = offer.language
    if not 1 <= number <= len(found):
        return OfferReply(f"option {number} out of range", say(rt, language, "offer_range",
                                                                  count=len(found)))
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        if not offers.claim(session, offer.id, now):
            return OfferReply("offer no longer open", say(rt, language, "offer_expired"))
    option = found[number - 1]
    assert rt.ehr is not None, "an offer is only made with an EHR"
    try:
        if offer.kind == "book":
            booked = scheduler(rt).book_new(
                offer.patient, option,
                identifier=(rt.settings.identifier_system, f"offer-{offer.uid}"))
        else:
            booked = scheduler(rt).book(offer.appointment, option,
                                        expected_version=offer.appointment_version)
    except SlotTaken:
        return _taken(rt, offer, option, zone, spec)
    except AppointmentChanged:
        _finish(rt, offer.id, "changed", "the appointment changed in the EHR")
        return OfferReply("appointment changed meanwhile; staff asked",
                          say(rt, language, "offer_changed"),
                          "Patient chose a new time by SMS, but the appointment had changed in "
                          "the EHR meanwhile; please contact the patient.")
    except FhirError as exc:
        _finish(rt, offer.id, "failed", f"EHR {exc.status}")
        return OfferReply(f"booking failed ({exc.status}); staff asked",
                          say(rt, language, "offer_failed"),
                          "Patient chose a new time by SMS; the booking failed, please book "
                          f"{option.start.isoformat()} by hand.")
    _finish(rt, offer.id, "booked", None, chosen=number, booked_start=option.start)
    log.info("offer %s: option %d booked for %s", offer.id, number, offer.appointment)
    return OfferReply(f"{'booked' if offer.kind == 'book' else 'rebooked'} (option {number})",
                      say(rt, language, "offer_booked", when=shown.when(option, zone, language)),
                      changed=booked, booked=True)


def _finish(rt: Runtime, offer_id: int, state: str, reason: str | None, *,
            chosen: int | None = None, booked_start: datetime | None = None) -> None:
    with transaction(rt.sessions) as session:
        offers.finish(session, offer_id, state, rt.clock.now(), reason=reason, chosen=chosen,
                      booked_start=booked_start)


def _taken(rt: Runtime, offer: SlotOffer, option: SlotOption, zone: ZoneInfo,
           spec: Reschedule) -> OfferReply:
    """Someone else got the time: offer the next ones (a new offer), or hand over to staff."""
    _finish(rt, offer.id, "taken", "the time was taken meanwhile")
    taken = say(rt, offer.language, "offer_taken")
    assert rt.ehr is not None
    refused = frozenset({option.key})  # the search may still see it free for a moment
    try:
        current = rt.ehr.read(*offer.appointment.split("/", 1))
        found = _find(rt, appointment_like(current), offer.patient, zone, spec, exclude=refused)
    except FhirError:
        found = []
    if not found:
        return OfferReply("time taken meanwhile; none left, staff asked",
                          f"{taken} {say(rt, offer.language, 'offer_none')}", NO_TIME_TASK)
    again = SlotOffer(
        kind=offer.kind, patient=offer.patient, appointment=offer.appointment,
        appointment_version=(current.get("meta") or {}).get("versionId"),
        original_start=offer.original_start, address=offer.address, language=offer.language)
    text = _open(rt, again, found, zone, spec, lead=taken)
    return OfferReply(f"time taken meanwhile; {len(found)} new times offered", text,
                      next_offer=again.uid)
