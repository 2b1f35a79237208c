"""When a patient can come, as they said it (a reply, a page): kept with their preferences, put on
their waitlisted Appointments as FHIR `requestedPeriod`, and used to filter the times offered."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from channels.availability import END_OF_DAY, PARTS_OF_DAY, Availability, Window, requested_periods
from connector.errors import FhirError
from outreach.core.ports import Runtime
from outreach.store import preferences
from outreach.store.db import transaction

log = logging.getLogger(__name__)

# How far ahead a waitlisted Appointment's requestedPeriod is spelled out.
REQUESTED_AHEAD = timedelta(days=90)
MAX_PERIODS = 400  # 90 days of several windows a day, and a bound on what we write

_WEEKDAYS, _WEEKEND = frozenset(range(5)), frozenset({5, 6})
# What the offer page lets a patient tick, each one window of the availability model (the
# parts of the day as channels.availability defines them; a weekend day at any hour).
PAGE_CHOICES: dict[str, Window] = {
    "weekday-mornings": Window(_WEEKDAYS, *PARTS_OF_DAY["morning"]),
    "weekday-afternoons": Window(_WEEKDAYS, *PARTS_OF_DAY["afternoon"]),
    "weekday-evenings": Window(_WEEKDAYS, *PARTS_OF_DAY["evening"]),
    "weekends": Window(_WEEKEND, time(0), END_OF_DAY),
}


def from_choices(names: Iterable[str]) -> Availability | None:
    """The windows of the page's ticked choices (unknown names ignored); None for none."""
    windows = tuple(PAGE_CHOICES[n] for n in PAGE_CHOICES if n in set(names))
    return Availability(windows) if windows else None


def choice_labels(language: str) -> dict[str, str]:
    """Each choice in the patient's words: "Weekday mornings", "Lunes a viernes por la mañana"."""
    labels = {}
    for name, window in PAGE_CHOICES.items():
        words = Availability((window,)).describe(language)
        labels[name] = words[:1].upper() + words[1:]
    return labels


def stated(rt: Runtime, patient: str) -> Availability | None:
    with rt.sessions() as session:
        codes = preferences.availability(session, patient)
    if codes is None:
        return None
    try:
        return Availability.from_codes(codes)
    except ValueError:
        log.warning("stored availability of %s is unreadable; ignored", patient)
        return None


def admits_for(rt: Runtime, patient: str,
               zone: ZoneInfo) -> Callable[[datetime, datetime], bool] | None:
    """A filter for offered times, when the patient has said when they can come."""
    found = stated(rt, patient)
    if found is None:
        return None
    return lambda start, end: found.admits(start, end, zone)


def record(rt: Runtime, patient: str, availability: Availability, zone: ZoneInfo) -> bool:
    """Keep it, and put it on the patient's waitlisted Appointments; False when unchanged."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        changed = preferences.save_availability(session, patient, availability.to_codes(), now)
    if changed and rt.ehr is not None:
        _on_waitlist(rt, patient, availability, zone, now)
    log.info("availability of %s %s", patient, "recorded" if changed else "unchanged")
    return changed


def _on_waitlist(rt: Runtime, patient: str, availability: Availability, zone: ZoneInfo,
                 now: datetime) -> None:
    assert rt.ehr is not None
    periods = requested_periods(availability, zone, now, now + REQUESTED_AHEAD,
                                max_periods=MAX_PERIODS)
    try:
        waiting = list(rt.ehr.search("Appointment", {"patient": patient, "status": "waitlist",
                                                     "_count": 20}))
    except FhirError as exc:
        log.warning("waitlist of %s not read (%s); availability kept here only", patient,
                    exc.status)
        return
    for appointment in waiting[:20]:
        version = (appointment.get("meta") or {}).get("versionId")
        try:
            rt.ehr.update({**appointment, "requestedPeriod": periods},
                          if_match=f'W/"{version}"' if version else None)
        except FhirError as exc:
            log.warning("requestedPeriod of Appointment/%s not updated (%s)",
                        appointment.get("id"), exc.status)
