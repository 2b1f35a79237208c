"""A patient's reply read as the answer to the offer of times open for their number: a number
books a rescheduling option, YES or NO answers a waitlist offer, and a reply saying when they
can come (while choosing a new time) is kept and new times inside it are offered."""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo

from channels.availability import Availability, parse
from channels.inbound import Reply
from channels.offer_replies import read_offer_answer
from outreach.access import options as shown
from outreach.access import reschedule, waitlist
from outreach.access.availability import record
from outreach.access.outcome import OfferReply
from outreach.access.texts import say
from outreach.core.ports import Runtime
from outreach.store import offers
from outreach.store.db import transaction
from outreach.store.models import SlotOffer
from rules.schema import Reschedule

# What the general reading found that an offer never overrides.
_NOT_ABOUT_OFFERS = frozenset({"stop", "start", "help", "empty", "score"})


def open_offer(rt: Runtime, address: str) -> SlotOffer | None:
    with rt.sessions() as session:
        offer = offers.latest_for(session, address, rt.clock.now())
        if offer is not None:
            session.expunge(offer)
        return offer


def reschedule_spec(offer: SlotOffer) -> Reschedule:
    try:
        return Reschedule.model_validate(offer.options.get("spec") or {})
    except ValueError:
        return Reschedule()


def handle(rt: Runtime, offer: SlotOffer, body: str, reply: Reply) -> OfferReply | None:
    """What the reply does to the offer; None when it is about something else. The result says
    what the reply was read as (`read_as`), for the record."""
    if reply.intent in _NOT_ABOUT_OFFERS:
        return None
    answer = read_offer_answer(body)
    expired = offer.state != "open" or offer.expires_at <= rt.clock.now()
    zone = shown.zone_of(offer.options, rt.settings.zone)
    if offer.kind == "waitlist":
        if answer is None or answer.kind == "choice":
            return None
        read_as = f"{answer.kind} to a waitlist offer"
        if expired:
            return OfferReply("waitlist offer answered after its hold",
                              say(rt, offer.language, "waitlist_taken"), read_as=read_as)
        return replace(waitlist.answer(rt, offer, answer.kind == "yes"), read_as=read_as)
    if answer is not None and answer.kind == "choice":
        read_as = f"option {answer.number} of an offer"
        if expired:
            return OfferReply("options answered after their hold",
                              say(rt, offer.language, "offer_expired"), read_as=read_as)
        return replace(reschedule.choose(rt, offer, answer.number or 0, zone,
                                         reschedule_spec(offer)), read_as=read_as)
    stated = parse(body, offer.language)
    if stated is None or expired:
        return None
    return replace(new_availability(rt, offer, stated, zone),
                   read_as="when they can come, while choosing a time")


def new_availability(rt: Runtime, offer: SlotOffer, stated: Availability,
                     zone: ZoneInfo) -> OfferReply:
    """"Only mornings" (by SMS or on the offer page): kept, and times inside it offered in place
    of the ones open (`next_offer`, when any are free)."""
    record(rt, offer.patient, stated, zone)
    with transaction(rt.sessions) as session:
        if not offers.claim(session, offer.id, rt.clock.now()):
            return OfferReply("options no longer open", say(rt, offer.language, "offer_expired"))
        offers.finish(session, offer.id, "replaced", rt.clock.now(),
                      reason="the patient said when they can come")
    again = reschedule.offer_times(rt, patient=offer.patient, appointment=offer.appointment,
                                   address=offer.address, language=offer.language, zone=zone,
                                   spec=reschedule_spec(offer), kind=offer.kind)
    saved = say(rt, offer.language, "availability_saved",
                availability=stated.describe(offer.language))
    return OfferReply(f"availability recorded; {again.outcome}",
                      f"{saved} {again.answer or ''}".strip(), again.task,
                      next_offer=again.next_offer)
