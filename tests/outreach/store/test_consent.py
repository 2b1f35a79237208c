"""Opt-out per channel and address: STOP is recorded once and found however the address is
written."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from outreach.core.ports import Runtime
from outreach.store.consent import normalize, opted_out, set_opt_out
from outreach.store.db import transaction
from outreach.store.models import ContactConsent
from tests.conftest import RuntimeFactory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MOBILE = "+15555550123"


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime()


@pytest.fixture
def session(rt: Runtime) -> Iterator[Session]:
    with transaction(rt.sessions) as session:
        yield session


def _stop(session: Session, channel: str, address: str, out: bool = True) -> bool:
    return set_opt_out(session, channel, address, out, source="keyword", now=NOW,
                       patient="Patient/p1")


def test_normalize_lower_cases_email_and_strips_spaces_from_numbers() -> None:
    assert normalize("email", " Pat.Example@Hospital.ORG ") == "pat.example@hospital.org"
    assert normalize("sms", " +1 555 555 0123 ") == MOBILE


def test_stop_is_recorded_once_under_the_normalized_address(session: Session) -> None:
    assert _stop(session, "sms", "+1 555 555 0123") is True
    assert _stop(session, "sms", MOBILE) is False  # a second STOP: no second confirmation
    (row,) = session.scalars(select(ContactConsent))
    assert (row.channel, row.address, row.opted_out, row.patient) == (
        "sms", MOBILE, True, "Patient/p1")


def test_opting_in_an_address_that_never_opted_out_changes_nothing(session: Session) -> None:
    assert _stop(session, "sms", MOBILE, out=False) is False
    assert session.scalars(select(ContactConsent)).all() == []


def test_start_after_stop_opts_back_in(session: Session) -> None:
    _stop(session, "email", "pat@example.org")
    assert _stop(session, "email", "PAT@example.org", out=False) is True
    assert _stop(session, "email", "pat@example.org", out=False) is False
    assert opted_out(session, [("email", "pat@example.org")]) == set()


def test_opted_out_finds_the_address_however_written_and_only_for_its_channel(
    session: Session,
) -> None:
    _stop(session, "sms", MOBILE)
    _stop(session, "email", "pat@example.org")
    asked = [("sms", "+1 555 555 0123"), ("email", " Pat@Example.org"),
             ("whatsapp", MOBILE), ("sms", "+15555550199"), ("email", "other@example.org")]
    assert opted_out(session, asked) == {("sms", "+1 555 555 0123"),
                                         ("email", " Pat@Example.org")}
    assert opted_out(session, []) == set()


def test_opted_out_asks_the_database_once_for_many_addresses(
    rt: Runtime, session: Session
) -> None:
    _stop(session, "sms", MOBILE)
    session.flush()
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(rt.engine, "before_cursor_execute", record)
    try:
        others = [("sms", f"+1555556{n:04d}") for n in range(99)]
        found = opted_out(session, [*others, ("sms", MOBILE)])
    finally:
        event.remove(rt.engine, "before_cursor_execute", record)
    assert found == {("sms", MOBILE)}
    assert len(statements) == 1


def test_every_spelling_of_an_opted_out_address_is_reported(session: Session) -> None:
    _stop(session, "sms", MOBILE)
    asked = [("sms", "+1 555 555 0123"), ("sms", MOBILE)]
    assert opted_out(session, asked) == set(asked)
