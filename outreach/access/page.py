"""The offer page behind a signed link in the SMS: the times held for the patient, booked with
one tap; the same rules as an SMS answer (one booking, a clear word when it cannot be)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import select

from channels.dates import format_when
from connector.replies import StaffTask, build_task
from outreach.access import options as shown
from outreach.access import reschedule, waitlist
from outreach.access.answers import new_availability, reschedule_spec
from outreach.access.availability import choice_labels, from_choices
from outreach.access.outcome import OfferReply
from outreach.core.links import LinkClaims, open_with
from outreach.core.ports import Runtime
from outreach.store.db import transaction
from outreach.store.models import SlotOffer
from outreach.writeback import outbox


@dataclass(frozen=True)
class OfferView:
    uid: str
    kind: str  # reschedule | book | waitlist
    state: str  # open, or how it ended
    language: str
    times: list[tuple[int, str]]  # (option number, when in the patient's words)
    holds_until: str  # in the patient's words and zone
    booked: str | None  # when the patient is booked, in their words, if they are
    # What the patient may tick to say when they can come instead: (form name, their words).
    can_come: list[tuple[str, str]] = field(default_factory=list)


def open_link(rt: Runtime, token: str) -> LinkClaims:
    """The claims of a genuine, unexpired offer link (BadLink otherwise)."""
    return open_with(rt.settings.preferences_secret, token, rt.clock.now(), purpose="offers")


def _load(rt: Runtime, uid: str) -> SlotOffer | None:
    with rt.sessions() as session:
        offer = session.scalars(select(SlotOffer).where(SlotOffer.uid == uid)).first()
        if offer is not None:
            session.expunge(offer)
        return offer


def _zone(rt: Runtime, offer: SlotOffer) -> ZoneInfo:
    return shown.zone_of(offer.options, rt.settings.zone)


def _is_open(rt: Runtime, offer: SlotOffer) -> bool:
    return offer.state == "open" and offer.expires_at > rt.clock.now()


def view(rt: Runtime, claims: LinkClaims) -> OfferView | None:
    offer = _load(rt, claims.subject)
    if offer is None:
        return None
    zone = _zone(rt, offer)
    state = "expired" if offer.state == "open" and not _is_open(rt, offer) else offer.state
    booked = None
    if offer.booked_start is not None:
        booked = format_when(offer.booked_start.astimezone(zone), offer.language)
    can_come = list(choice_labels(offer.language).items()) if offer.kind != "waitlist" else []
    return OfferView(offer.uid, offer.kind, state, offer.language,
                     [(n, shown.when(o, zone, offer.language))
                      for n, o in enumerate(shown.loaded(offer.options), start=1)],
                     format_when(offer.expires_at.astimezone(zone), offer.language), booked,
                     can_come)


def path_of(rt: Runtime, uid: str) -> str | None:
    """The path of an offer's page (`/o/<token>`), signed anew, while its times are held."""
    offer = _load(rt, uid)
    if offer is None:
        return None
    link = rt.settings.offer_link(offer.uid, offer.language, rt.clock.now(), offer.expires_at)
    return urlsplit(link).path if link else None


def _number(choice: str, count: int) -> int | None:
    """The option a form field names: one of 1..count, written plainly."""
    if not (choice.isascii() and choice.isdigit() and len(choice) <= 2):
        return None
    number = int(choice)
    return number if 1 <= number <= count else None


def answer(rt: Runtime, claims: LinkClaims, choice: str) -> OfferReply | None:
    """`choice`: an option number (rescheduling), or yes / no (a waitlist offer). None when
    the offer is unknown; an answer of None when the choice is none of the offer's."""
    offer = _load(rt, claims.subject)
    if offer is None:
        return None
    if offer.kind == "waitlist":
        if choice not in ("yes", "no"):
            return OfferReply("page: no answer chosen", None)
        result = waitlist.answer(rt, offer, choice == "yes")
    else:
        number = _number(choice, len(shown.loaded(offer.options)))
        if number is None:
            return OfferReply("page: no time chosen", None)
        result = reschedule.choose(rt, offer, number, _zone(rt, offer), reschedule_spec(offer))
    if result.task:
        _raise_task(rt, offer, result.task)
    return result


def restate(rt: Runtime, claims: LinkClaims, ticked: Iterable[str]) -> OfferReply | None:
    """The patient ticked when they can come instead: kept, and times inside it offered in a
    new offer (`next_offer`). None when the offer is unknown; an answer of None when nothing
    known was ticked or these times are not to be changed (a waitlist offer)."""
    offer = _load(rt, claims.subject)
    if offer is None:
        return None
    stated = from_choices(ticked)
    if stated is None or offer.kind == "waitlist":
        return OfferReply("page: no availability ticked", None)
    result = new_availability(rt, offer, stated, _zone(rt, offer))
    if result.task:
        _raise_task(rt, offer, result.task)
    return result


def _raise_task(rt: Runtime, offer: SlotOffer, description: str) -> None:
    now, system = rt.clock.now(), rt.settings.identifier_system
    key = f"task-offer-{offer.uid}"
    with transaction(rt.sessions) as session:
        row = outbox.queue(session, build_task(StaffTask(
            identifier_system=system, identifier_value=key, description=description,
            authored=now, patient=offer.patient, focus=offer.appointment)), system, key, now)
    rt.enqueue.write_back([row.id])
