"""What a patient's answer to times we offered means: the number of an option, yes, or no.

Read only while an offer is open for the number, and only after the general reading
(`channels.inbound.classify`) found no opt-out, opt-in or help: those always win."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from channels.inbound import MAX_READ, Phrasebook, normalize, phrasebooks

# "2", "#2", "option 2", "opcion 2", "2 please": one number, a few words around it at most.
_CHOICE = re.compile(r"^(?:(?:option|opcion|number|numero|no)\s)?([0-9]{1,2})$")


@dataclass(frozen=True, slots=True)
class OfferAnswer:
    kind: Literal["choice", "yes", "no"]
    number: int | None = None  # the option chosen, 1-based, as the patient wrote it
    language: str | None = None


def _whole(books: tuple[Phrasebook, ...], text: str, name: str) -> str | None:
    for book in books:
        if text in getattr(book, name):
            return book.language
    return None


def read_offer_answer(body: str, books: tuple[Phrasebook, ...] | None = None) -> OfferAnswer | None:
    """The answer, or None when the reply is about something else (staff read it)."""
    books = books if books is not None else phrasebooks()
    text = normalize(body[:MAX_READ])
    for book in books:
        for filler in book.filler:
            text = re.sub(rf"(^| ){re.escape(filler)}( |$)", " ", text).strip()
    match = _CHOICE.fullmatch(text)
    if match is not None:
        return OfferAnswer("choice", int(match.group(1)))
    yes = _whole(books, text, "confirm_whole")
    if yes is not None:
        return OfferAnswer("yes", language=yes)
    no = _whole(books, text, "decline_whole")
    if no is not None:
        return OfferAnswer("no", language=no)
    return None
