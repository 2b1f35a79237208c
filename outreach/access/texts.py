"""What we answer a patient, in their language: the phrasebooks' answers, filled in."""

from __future__ import annotations

from typing import Any

from channels.inbound import phrasebooks
from outreach.core.ports import Runtime


def say(rt: Runtime, language: str | None, key: str, **values: Any) -> str:
    """The answer `key` in the patient's language (English when we have none of theirs), with
    the organization, the callback line and `values` filled in."""
    books = {book.language: book for book in phrasebooks()}
    book = books.get(language or "en", books["en"])
    phone = rt.settings.callback_phone
    text = book.answers.get(key) or books["en"].answers[key]
    return text.format(
        organization=rt.settings.organization_name or book.answers.get("clinic", "our clinic"),
        callback=book.answers["callback"].format(callback_phone=phone) if phone else "",
        **values)


def answer_language(language: str | None) -> str:
    """A language we answer in."""
    return language if language in {book.language for book in phrasebooks()} else "en"
