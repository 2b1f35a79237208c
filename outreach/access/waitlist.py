"""Waitlist backfill: a time freed by a cancellation is offered by SMS to waitlisted Appointments
(status `waitlist`) of the same practitioner, location and service type whose requestedPeriod
holds it, a few patients at a time, longest waiting first (as the journey's `backfill` says).
The first YES books it (one booking, however many answer: the backfill row is claimed in our
database, and the Slot is taken in the EHR with If-Match); later answers are told it is taken;
after the hold without a YES the next patients are asked, by the sweep."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from channels import OutboundMessage, SendError
from connector.errors import FhirError
from connector.scheduling import AppointmentChanged, SlotOption, SlotTaken, requested_admits
from connector.slots import (
    PRACTITIONER_TYPES,
    parse_instant,
    participant_actors,
    service_types,
    slot_references,
)
from connector.writeback import SentMessage, build_communication
from outreach.access import options as shown
from outreach.access.ehr import scheduler
from outreach.access.outcome import OfferReply
from outreach.access.texts import answer_language, say
from outreach.core.ports import Runtime
from outreach.planning.outcomes import JourneyOutcome
from outreach.sending.checks import SmsContact, sms_contact
from outreach.store import offers
from outreach.store.db import transaction
from outreach.store.models import Backfill, SlotOffer
from outreach.writeback import outbox
from rules import JourneySet, ResourceChange
from rules.planner import shift_out_of_quiet_hours
from rules.recipients import patient_reference
from rules.schema import Backfill as BackfillSpec

log = logging.getLogger(__name__)

BATCH = 50  # backfills looked at per sweep
MAX_WAITING = 300  # waitlisted Appointments read per search (bounds a hostile or huge answer)


_ACTOR_TYPES = (*PRACTITIONER_TYPES, "Location", "HealthcareService")


def freed_time(appointment: dict[str, Any]) -> SlotOption | None:
    """The time a cancelled appointment gives back, with whom and what for; None without one."""
    start, end = parse_instant(appointment.get("start")), parse_instant(appointment.get("end"))
    if start is None or end is None or end <= start:
        return None
    slots = slot_references(appointment)
    return SlotOption(start=start, end=end, slot=slots[0] if slots else None, slot_version=None,
                      schedule=None, actors=tuple(participant_actors(appointment, _ACTOR_TYPES)),
                      service_type=service_types(appointment))


def start(session: Session, journeys: JourneySet, outcomes: list[JourneyOutcome],
          change: ResourceChange, now: datetime) -> int:
    """In intake's transaction: a backfill journey that fired on this cancellation opens a
    backfill (once per appointment); the sweep asks the first patients. Returns how many."""
    opened = 0
    if change.resource_type != "Appointment" or change.current is None:
        return 0  # only a cancelled Appointment frees a time
    for outcome in outcomes:
        journey = journeys.by_name(outcome.journey)
        if outcome.action != "enroll" or journey is None or journey.spec.backfill is None:
            continue
        freed = freed_time(change.current or {})
        if freed is None:
            log.info("backfill %s: %s frees no time (no start or end)", journey.name,
                     change.reference)
            continue
        exists = session.scalar(select(Backfill.id).where(Backfill.freed_by == change.reference))
        if exists is None:
            session.add(Backfill(journey=journey.name, freed_by=change.reference,
                                 option=shown.to_json(freed), state="open", next_at=now,
                                 created_at=now))
            opened += 1
    return opened


def advance(rt: Runtime) -> dict[str, int]:
    """The sweep's part: expire answered-too-late offers, ask the next patients, close the
    backfills nobody can take. Returns counts for the log."""
    if rt.ehr is None:  # no EHR to ask (a forecast has only the versions it was given)
        return {"asked": 0, "closed": 0}
    now = rt.clock.now()
    with rt.sessions() as session:
        due = list(session.scalars(select(Backfill.id).where(
            Backfill.state == "open", Backfill.next_at <= now).order_by(Backfill.next_at)
            .limit(BATCH)))
    counts = {"asked": 0, "closed": 0}
    for backfill_id in due:
        asked, closed = _advance(rt, backfill_id)
        counts["asked"] += asked
        counts["closed"] += closed
    return counts


def _close(session: Session, backfill: Backfill, state: str, now: datetime, why: str) -> None:
    backfill.state, backfill.finished_at = state, now
    log.info("backfill %s of %s %s: %s", backfill.id, backfill.freed_by, state, why)


def _advance(rt: Runtime, backfill_id: int) -> tuple[int, int]:
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        backfill = session.get(Backfill, backfill_id, with_for_update=True)
        if backfill is None or backfill.state != "open":
            return 0, 0
        session.execute(update(SlotOffer).where(
            SlotOffer.backfill_id == backfill.id, SlotOffer.state == "open",
            SlotOffer.expires_at <= now).values(state="expired"))
        waiting = session.scalar(select(SlotOffer.expires_at).where(
            SlotOffer.backfill_id == backfill.id, SlotOffer.state == "open")
            .order_by(SlotOffer.expires_at).limit(1))
        if waiting is not None:
            backfill.next_at = waiting
            return 0, 0
        journey = rt.journeys.by_name(backfill.journey)
        spec = journey.spec.backfill if journey else None
        freed = shown.from_json(backfill.option)
        if spec is None or journey is None:
            _close(session, backfill, "gone", now, "the journey is no longer loaded")
            return 0, 1
        if freed.start - now < spec.duration("lead_time"):
            _close(session, backfill, "gone", now, "too near to offer")
            return 0, 1
        asked = set(session.scalars(select(SlotOffer.patient).where(
            SlotOffer.backfill_id == backfill.id)))
        if len(asked) >= spec.max_patients:
            _close(session, backfill, "exhausted", now, "asked as many as the journey allows")
            return 0, 1
    candidates = _candidates(rt, freed, spec, asked)
    if candidates is None:  # the EHR could not be asked: try again after the hold
        _reschedule(rt, backfill_id, now + spec.duration("hold"))
        return 0, 0
    sent = 0
    for appointment, patient in candidates:
        if sent >= spec.at_once:
            break
        contact = sms_contact(rt, patient, journey.spec.consent)
        if isinstance(contact, str):
            _skip(rt, backfill_id, appointment, patient, contact)
            continue
        quiet = journey.spec.quiet_hours
        later = shift_out_of_quiet_hours(now, quiet, contact.zone) if quiet else now
        if later > now:  # nobody is woken for an offer: the wave waits for morning
            _reschedule(rt, backfill_id, later)
            return sent, 0
        sent += _offer(rt, backfill_id, journey.spec.consent, freed, spec, appointment,
                       patient, contact)
    if sent == 0:
        with transaction(rt.sessions) as session:
            backfill = session.get(Backfill, backfill_id, with_for_update=True)
            if backfill is not None and backfill.state == "open":
                _close(session, backfill, "exhausted", now, "nobody waiting matches")
        return 0, 1
    _reschedule(rt, backfill_id, now + spec.duration("hold"))
    return sent, 0


def _reschedule(rt: Runtime, backfill_id: int, at: datetime) -> None:
    with transaction(rt.sessions) as session:
        session.execute(update(Backfill).where(Backfill.id == backfill_id)
                        .values(next_at=at))


def _waiting_since(appointment: dict[str, Any]) -> datetime:
    return (parse_instant(appointment.get("created"))
            or parse_instant((appointment.get("meta") or {}).get("lastUpdated"))
            or datetime.max.replace(tzinfo=UTC))


def _fits(appointment: dict[str, Any], freed: SlotOption) -> bool:
    """Its actors (those it names) are the freed time's, and its requestedPeriod holds it."""
    if not set(participant_actors(appointment, _ACTOR_TYPES)) <= set(freed.actors):
        return False
    admits = requested_admits(appointment)
    return admits is None or admits(freed.start, freed.end)


def _candidates(rt: Runtime, freed: SlotOption, spec: BackfillSpec,
                asked: set[str]) -> list[tuple[dict[str, Any], str]] | None:
    """(waitlisted Appointment, its Patient) in the journey's order; None when the EHR failed."""
    if rt.ehr is None:
        return None
    base: dict[str, str | int] = {"status": "waitlist", "_count": 100}
    if freed.service_type:
        system, code = freed.service_type[0]
        base["service-type"] = f"{system}|{code}" if system else code
    # Waiting for this practitioner, or for this place with anyone: one search each.
    searches = []
    for name, types in (("practitioner", PRACTITIONER_TYPES), ("location", ("Location",))):
        actor = next((a for a in freed.actors if a.split("/")[0] in types), None)
        if actor is not None:
            searches.append({**base, name: actor})
    found: dict[str, dict[str, Any]] = {}
    try:
        for params in searches:
            for appointment in islice(rt.ehr.search("Appointment", params), MAX_WAITING):
                found.setdefault(str(appointment.get("id")), appointment)
    except FhirError as exc:
        log.warning("waitlist search failed (%s); asking again later", exc.status)
        return None
    matching = [a for a in found.values() if a.get("status") == "waitlist" and _fits(a, freed)]
    matching.sort(key=_waiting_since, reverse=spec.order == "latest-request")
    result = []
    for appointment in matching:
        patient = patient_reference(appointment)
        if patient is not None and patient not in asked:
            asked.add(patient)
            result.append((appointment, patient))
    return result


def _skip(rt: Runtime, backfill_id: int, appointment: dict[str, Any], patient: str,
          why: str) -> None:
    """Recorded so the patient is not looked at again for this time."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        session.add(SlotOffer(
            uid=offers.new_uid(), kind="waitlist", backfill_id=backfill_id, patient=patient,
            appointment=f"Appointment/{appointment.get('id')}", address="", language="en",
            options={"options": []}, state="skipped", created_at=now, expires_at=now,
            reason=why[:200]))
    log.info("backfill %s: %s not asked (%s)", backfill_id, patient, why)


def _hold_words(hold: timedelta, language: str) -> str:
    hours = round(hold.total_seconds() / 3600)
    if hours >= 1:
        return f"{hours} {'h' if language == 'es' else 'hours' if hours > 1 else 'hour'}"
    return f"{round(hold.total_seconds() / 60)} min"


def _offer(rt: Runtime, backfill_id: int, category: str, freed: SlotOption, spec: BackfillSpec,
           appointment: dict[str, Any], patient: str, contact: SmsContact) -> int:
    """Text one patient the freed time; recorded before it is sent, so a crash never sends it
    twice (the provider also de-duplicates on the offer's key)."""
    now = rt.clock.now()
    language = answer_language(contact.language)
    hold = spec.duration("hold")
    text = say(rt, language, "waitlist_offer", when=shown.when(freed, contact.zone, language),
               hold=_hold_words(hold, language))
    with transaction(rt.sessions) as session:
        offer = SlotOffer(
            uid=offers.new_uid(), kind="waitlist", backfill_id=backfill_id, patient=patient,
            appointment=f"Appointment/{appointment.get('id')}",
            appointment_version=(appointment.get("meta") or {}).get("versionId"),
            original_start=parse_instant(appointment.get("start")), address=contact.number,
            language=language, options=shown.stored([freed], contact.zone), state="sending",
            created_at=now, expires_at=now + hold)
        session.add(offer)
        session.flush()
        offer_id, uid = offer.id, offer.uid
    channel = rt.channels.get("sms")
    try:
        if channel is None:
            raise SendError("no sms channel configured")
        receipt = channel.send(OutboundMessage(key=f"offer-{uid}", to=contact.number, text=text))
    except SendError as exc:
        with transaction(rt.sessions) as session:
            offers.finish(session, offer_id, "failed", now, reason=f"send: {exc}")
        log.warning("backfill %s: offer %s not sent (%s)", backfill_id, offer_id,
                    type(exc).__name__)
        return 0
    system = rt.settings.identifier_system
    with transaction(rt.sessions) as session:
        session.execute(update(SlotOffer).where(SlotOffer.id == offer_id).values(
            state="open", provider_message_id=receipt.provider_message_id))
        row = outbox.queue(session, build_communication(SentMessage(
            identifier_system=system, identifier_value=f"offer-{uid}", patient=patient,
            about=f"Appointment/{appointment.get('id')}", channel="sms",
            category="notification", sent=now, text=text)), system, f"offer-{uid}", now,
            known_new=True)
    rt.enqueue.write_back([row.id])
    log.info("backfill %s: offer %s sent to %s (category %s)", backfill_id, offer_id, patient,
             category)
    return 1


def answer(rt: Runtime, offer: SlotOffer, yes: bool) -> OfferReply:
    """A waitlisted patient's YES or NO to the time offered."""
    language, now = offer.language, rt.clock.now()
    if not yes:
        with transaction(rt.sessions) as session:
            if offers.claim(session, offer.id, now):
                offers.finish(session, offer.id, "declined", now)
                session.execute(update(Backfill).where(Backfill.id == offer.backfill_id)
                                .values(next_at=now))
        return OfferReply("waitlist offer declined", say(rt, language, "waitlist_declined"))
    with transaction(rt.sessions) as session:
        if not offers.claim(session, offer.id, now):
            return OfferReply("waitlist offer no longer open",
                              say(rt, language, "waitlist_taken"))
        assert offer.backfill_id is not None
        if not offers.fill(session, offer.backfill_id, offer.id, now):
            offers.finish(session, offer.id, "taken", now, reason="another patient said yes")
            return OfferReply("waitlist time taken by another patient",
                              say(rt, language, "waitlist_taken"))
    return _book(rt, offer)


def _book(rt: Runtime, offer: SlotOffer) -> OfferReply:
    assert rt.ehr is not None and offer.backfill_id is not None
    language, now = offer.language, rt.clock.now()
    freed = shown.loaded(offer.options)[0]
    zone = shown.zone_of(offer.options, rt.settings.zone)
    try:
        booked = scheduler(rt).book(offer.appointment, freed,
                                         expected_version=offer.appointment_version)
    except SlotTaken:
        _settle(rt, offer, "taken", "gone", "the EHR gave the time to someone else")
        return OfferReply("waitlist time taken in the EHR", say(rt, language, "waitlist_taken"))
    except AppointmentChanged:
        _settle(rt, offer, "changed", "open", "the waitlisted appointment changed")
        return OfferReply("waitlisted appointment changed; staff asked",
                          say(rt, language, "offer_changed"),
                          "Patient said yes by SMS to a freed time, but their waitlisted "
                          "appointment had changed in the EHR; please contact the patient.")
    except FhirError as exc:
        _settle(rt, offer, "failed", "gone", f"EHR {exc.status}")
        return OfferReply(f"waitlist booking failed ({exc.status}); staff asked",
                          say(rt, language, "offer_failed"),
                          "Patient said yes by SMS to a freed time; the booking failed, please "
                          f"book {freed.start.isoformat()} by hand.")
    with transaction(rt.sessions) as session:
        offers.finish(session, offer.id, "booked", now, chosen=1, booked_start=freed.start)
        session.execute(update(SlotOffer).where(
            SlotOffer.backfill_id == offer.backfill_id, SlotOffer.state == "open")
            .values(state="taken", reason="another patient said yes"))
    log.info("backfill %s: filled by offer %s", offer.backfill_id, offer.id)
    return OfferReply("waitlist time booked",
                      say(rt, language, "offer_booked", when=shown.when(freed, zone, language)),
                      changed=booked, booked=True)


def _settle(rt: Runtime, offer: SlotOffer, offer_state: str, backfill_state: str,
            why: str) -> None:
    """A YES that could not be booked: the offer ends; the backfill ends too, or is reopened
    for the next patient."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        offers.finish(session, offer.id, offer_state, now, reason=why)
        backfill = session.get(Backfill, offer.backfill_id, with_for_update=True)
        if backfill is None:
            return
        if backfill_state == "open":
            backfill.state, backfill.filled_by, backfill.next_at = "open", None, now
            backfill.finished_at = None
        else:
            _close(session, backfill, backfill_state, now, why)
