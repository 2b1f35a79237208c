"""What an answer to an offer of times led to, for the reply handler and the offer page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class OfferReply:
    outcome: str  # for the record (inbound_messages.outcome), no patient data
    answer: str | None  # what we tell the patient, in their language
    task: str | None = None  # a staff Task to raise, when a person must step in
    changed: dict[str, Any] | None = None  # the Appointment as booked, for intake to follow
    booked: bool = False
    next_offer: str | None = None  # the uid of a new offer of times made instead (its page)
    read_as: str | None = None  # what the patient's answer was read as, for the record
