"""A patient's own preferences: what is refused, what is stored, and what counts as a change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outreach.core.ports import Runtime
from outreach.store.db import transaction
from outreach.store.models import PatientPreference
from outreach.store.preferences import Preferences, load, save
from tests.conftest import RuntimeFactory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PATIENT = "Patient/pat-1"


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime()


def _save(rt: Runtime, prefs: Preferences, now: datetime = NOW,
          patient: str = PATIENT) -> dict[str, tuple[str | None, str | None]]:
    with transaction(rt.sessions) as session:
        return save(session, patient, prefs, now)


def _load(rt: Runtime, patient: str = PATIENT) -> Preferences:
    with rt.sessions() as session:
        return load(session, patient)


@pytest.mark.parametrize(("fields", "message"), [
    ({"language": "fr"}, "language 'fr'"),
    ({"language": ""}, "language ''"),
    ({"channel": "fax"}, "channel 'fax'"),
    ({"channel": "any"}, "channel 'any'"),
    ({"categories_off": frozenset({"newsletters"})}, "newsletters"),
    ({"categories_off": frozenset({"surveys", "all"})}, "'all'"),
    ({"quiet_from": "21:00"}, "both a start and an end"),
    ({"quiet_to": "08:00"}, "both a start and an end"),
    ({"quiet_from": "24:00", "quiet_to": "08:00"}, "'24:00'"),
    ({"quiet_from": "9:00", "quiet_to": "08:00"}, "'9:00'"),
    ({"quiet_from": "21:00", "quiet_to": "08:60"}, "'08:60'"),
    ({"quiet_from": "21:00:00", "quiet_to": "08:00"}, "HH:MM"),
    ({"quiet_from": "21:00\n", "quiet_to": "08:00"}, "HH:MM"),
    ({"quiet_from": "22:00", "quiet_to": "22:00"}, "same time"),
])
def test_what_cannot_be_a_preference_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Preferences(**fields)


def test_nothing_stored_reads_as_no_preferences(rt: Runtime) -> None:
    assert _load(rt) == Preferences()


def test_save_stores_the_choices_and_returns_what_changed(rt: Runtime) -> None:
    chosen = Preferences(language="es", channel="email", quiet_from="21:00", quiet_to="08:00",
                         categories_off=frozenset({"surveys", "campaigns"}))

    changes = _save(rt, chosen)

    assert changes == {"language": (None, "es"), "channel": (None, "email"),
                       "quiet_from": (None, "21:00"), "quiet_to": (None, "08:00"),
                       "categories_off": (None, "campaigns,surveys")}
    assert _load(rt) == chosen
    assert _load(rt, "Patient/someone-else") == Preferences()


def test_a_second_identical_save_changes_nothing(rt: Runtime) -> None:
    chosen = Preferences(language="es", categories_off=frozenset({"surveys"}))
    _save(rt, chosen)

    assert _save(rt, chosen, now=NOW + timedelta(hours=1)) == {}

    with rt.sessions() as session:
        row = session.get_one(PatientPreference, PATIENT)
    assert row.changed_at == NOW  # untouched: nothing was written


def test_save_returns_only_the_fields_that_differ(rt: Runtime) -> None:
    _save(rt, Preferences(language="es", channel="sms", quiet_from="21:00", quiet_to="08:00",
                          categories_off=frozenset({"surveys"})))
    later = NOW + timedelta(days=1)

    changes = _save(rt, Preferences(language="es", channel="sms", quiet_from="22:00",
                                    quiet_to="08:00",
                                    categories_off=frozenset({"surveys", "campaigns"})), later)

    assert changes == {"quiet_from": ("21:00", "22:00"),
                       "categories_off": ("surveys", "campaigns,surveys")}
    with rt.sessions() as session:
        assert session.get_one(PatientPreference, PATIENT).changed_at == later


def test_clearing_a_choice_is_a_change_back_to_not_set(rt: Runtime) -> None:
    _save(rt, Preferences(channel="email", quiet_from="21:00", quiet_to="08:00",
                          categories_off=frozenset({"surveys"})))

    changes = _save(rt, Preferences())

    assert changes == {"channel": ("email", None), "quiet_from": ("21:00", None),
                       "quiet_to": ("08:00", None), "categories_off": ("surveys", None)}
    assert _load(rt) == Preferences()
    assert _save(rt, Preferences()) == {}


def test_saving_no_preferences_for_a_new_patient_writes_no_row(rt: Runtime) -> None:
    assert _save(rt, Preferences()) == {}
    with rt.sessions() as session:
        assert session.get(PatientPreference, PATIENT) is None
