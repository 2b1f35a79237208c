"""What our own records say about a patient right before a send, in one statement: the journey
paused, the patient's preferences, the contacts opted out, what was sent lately."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Connection,
    bindparam,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
)

from outreach.store import preferences
from outreach.store.consent import spellings
from outreach.store.models import (
    ContactConsent,
    Enrollment,
    JourneyControl,
    PatientPreference,
    ScheduledStep,
    StepState,
)
from rules.caps import CAP_WINDOW, Send
from rules.loader import JourneySet


@dataclass(frozen=True)
class Records:
    paused: bool
    prefs: preferences.Preferences
    blocked: set[tuple[str, str]]  # the (channel, address) pairs asked that are opted out
    sent: list[Send]


def _kind(name: str) -> Any:
    return literal_column(f"'{name}'").label("kind")


# One UNION ALL, each branch tagged by its kind, in the columns (kind, at, a, b, c, d, e). The
# sends come first: a compound's result types are its first branch's (the timestamp's type).
_SENT = select(_kind("sent"), ScheduledStep.sent_at.label("at"), ScheduledStep.channel.label("a"),
               ScheduledStep.step_id.label("b"), Enrollment.journey.label("c"),
               null().label("d"), null().label("e")).join(
    Enrollment, ScheduledStep.enrollment_id == Enrollment.id).where(
    Enrollment.patient == bindparam("patient"), ScheduledStep.state == StepState.SENT,
    ScheduledStep.sent_at >= bindparam("since"), ScheduledStep.id != bindparam("exclude"))
_PAUSED = select(_kind("paused"), null(), null(), null(), null(), null(), null()).where(
    JourneyControl.journey == bindparam("journey"), JourneyControl.paused)
_PREFERENCES = select(
    _kind("prefs"), null(), PatientPreference.language, PatientPreference.channel,
    PatientPreference.quiet_from, PatientPreference.quiet_to, PatientPreference.categories_off,
).where(PatientPreference.patient == bindparam("patient"))
_OPTED_OUT = select(_kind("optout"), null(), ContactConsent.channel, ContactConsent.address,
                    null(), null(), null()).where(
    ContactConsent.opted_out.is_(True),
    tuple_(ContactConsent.channel, ContactConsent.address).in_(
        bindparam("pairs", expanding=True)))
# Built once each (with and without contacts to look up): every send-time check runs one.
_WITH_CONTACTS: CompoundSelect[Any] = union_all(_SENT, _PAUSED, _PREFERENCES, _OPTED_OUT)
_WITHOUT_CONTACTS: CompoundSelect[Any] = union_all(_SENT, _PAUSED, _PREFERENCES)


def read(connection: Connection, journeys: JourneySet, journey: str, patient: str,
         contacts: Sequence[tuple[str, str]], now: datetime, exclude_step: int) -> Records:
    """As `paused_journeys`, `preferences.load`, `opted_out` and `sent_recently` (excluding
    the step being sent) would answer, in one round trip."""
    asked = spellings(contacts)
    params: dict[str, Any] = {"patient": patient, "journey": journey,
                              "since": now - CAP_WINDOW, "exclude": exclude_step}
    statement = _WITHOUT_CONTACTS
    if asked:
        statement, params["pairs"] = _WITH_CONTACTS, list(asked)
    paused, prefs = False, preferences.Preferences()
    blocked: set[tuple[str, str]] = set()
    sent = []
    for kind, at, a, b, c, d, e in connection.execute(statement, params):
        if kind == "sent":
            if at is not None:
                spec = journeys.step(c, b)
                sent.append(Send(at, a or "sms", spec is not None and spec.cap_exempt))
        elif kind == "paused":
            paused = True
        elif kind == "prefs":
            prefs = preferences.from_row(_PreferenceRow(a, b, c, d, e))
        else:
            blocked.update(asked[(a, b)])
    return Records(paused, prefs, blocked, sent)


@dataclass(frozen=True, slots=True)
class _PreferenceRow:
    language: str | None
    channel: str | None
    quiet_from: str | None
    quiet_to: str | None
    categories_off: str
