"""Phone numbers and e-mail addresses are masked in every log line, whoever logged them."""

from __future__ import annotations

import io
import logging

import pytest

from outreach.core.redact import RedactContacts, install, redact


@pytest.mark.parametrize(("line", "shown"), [
    ("sms to +15555550123 failed", "sms to [phone] failed"),
    ("Twilio 21211: The 'To' number +1 555 555 0123 is not valid",
     "Twilio 21211: The 'To' number [phone] is not valid"),
    ("bounced: Ana.Garcia+clinic@example.org", "bounced: [email]"),
    ("550 5.1.1 <pat@hospital.example.co.uk>: unknown", "550 5.1.1 <[email]>: unknown"),
])
def test_contacts_are_masked(line: str, shown: str) -> None:
    assert redact(line) == shown


@pytest.mark.parametrize("line", [
    "step 12345 sent at 2026-03-02T09:00:00+00:00",
    "Patient/abc-123 Appointment/a1 v12",
    "write-back 77 failed (attempt 3): 503",
    "took 1234567 ms",
    "ingested Appointment/b85e1336-3102-4949-b18c-ee96ae749a72 version a64dbf0b-30f8-4e6b",
    "step 1 sent on email (provider id <179624340539.18754.1663792936.883e7b90@hospital.example>)",
])
def test_ids_times_and_counts_are_left_alone(line: str) -> None:
    assert redact(line) == line


def test_a_handler_with_the_filter_never_writes_a_contact() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.redact")
    logger.propagate, logger.disabled = False, False  # whatever earlier tests' configs did
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install(logger)
    install(logger)  # once per handler
    assert sum(isinstance(f, RedactContacts) for f in handler.filters) == 1
    try:
        logger.warning("reply from %s to %s", "+15555550123", "ana@example.org")
        try:
            raise ValueError("provider said: +15555550123 unreachable")
        except ValueError:
            logger.exception("send failed")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "+15555550123" not in written and "ana@example.org" not in written
    assert "reply from [phone] to [email]" in written and "[phone] unreachable" in written
