"""The last line of defence for "no patient data in logs": phone numbers and e-mail addresses
are masked in every log line, whatever logged them (our code logs ids only; a library's error
message might not)."""

from __future__ import annotations

import logging
import re

# Not inside a longer token (a UUID, a hex id, a path, an address): a phone number stands alone.
_PHONE = re.compile(r"(?<![\w\-./@:])\+?\(?\d[\d ().\-]{6,}\d(?![\w\-./@:])")
_EMAIL = re.compile(r"([\w.+\-]+)@[\w\-]+(\.[\w\-]+)+")
# An e-mail Message-ID (Python's make_msgid: digits.digits.digits[.uuid]@host) names a message,
# not a person: kept, so a send can be traced in the mail server's log.
_MESSAGE_ID = re.compile(r"\d+\.\d+\.\d+(\.[0-9a-f\-]+)?")


def redact(text: str) -> str:
    return _EMAIL.sub(_email, _PHONE.sub(_phone, text))


def _email(match: re.Match[str]) -> str:
    return match.group() if _MESSAGE_ID.fullmatch(match.group(1)) else "[email]"


def _phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group())
    # Timestamps, counts and ids are not phone numbers: only 8 to 15 digits, at most one run
    # of separators between groups, are masked.
    return "[phone]" if 8 <= digits <= 15 and not re.search(r"\d{4}-\d\d-\d\d", match.group()) \
        else match.group()


class RedactContacts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install(logger: logging.Logger | None = None) -> None:
    """On every handler of `logger` (the root logger by default), once each."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactContacts) for f in handler.filters):
            handler.addFilter(RedactContacts())
