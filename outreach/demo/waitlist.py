"""The waitlist as the demo's timeline sees it: when the sweep next has a freed time to offer,
and the offers it made since the timeline last looked."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from outreach.core.ports import Runtime
from outreach.demo.lines import stamp_plain
from outreach.store.models import Backfill, SlotOffer


@dataclass(frozen=True)
class Offer:
    id: int
    key: str  # the message's key: what the channel printed is kept under it
    line: str  # the timeline's line for it


def next_due(rt: Runtime) -> datetime | None:
    """When the sweep next looks at an open backfill."""
    with rt.sessions() as session:
        return session.scalar(select(func.min(Backfill.next_at)).where(Backfill.state == "open"))


def offers_since(rt: Runtime, shown: Collection[int]) -> list[Offer]:
    """Waitlisted patients texted a freed time (or passed over, and why), oldest first."""
    with rt.sessions() as session:
        found = session.execute(
            select(SlotOffer, Backfill).join(Backfill, SlotOffer.backfill_id == Backfill.id)
            .where(SlotOffer.id.not_in(shown)).order_by(SlotOffer.id)).all()
        return [Offer(offer.id, f"offer-{offer.uid}", _line(rt, offer, backfill))
                for offer, backfill in found]


def _line(rt: Runtime, offer: SlotOffer, backfill: Backfill) -> str:
    about = f"{backfill.journey} for {offer.patient} ({offer.appointment})"
    if offer.state in ("skipped", "failed"):
        return f"NOT OFFERED {about}: {offer.reason}"
    freed = stamp_plain(str(backfill.option.get("start", "")))
    return f"OFFERED sms: {about}{_order(rt, backfill)}: the time {backfill.freed_by} gave " \
           f"back, {freed}"


def _order(rt: Runtime, backfill: Backfill) -> str:
    journey = rt.journeys.by_name(backfill.journey)
    spec = journey.spec.backfill if journey is not None else None
    if spec is None:
        return ""
    return ", longest waiting first" if spec.order == "earliest-request" else \
        ", latest request first"
