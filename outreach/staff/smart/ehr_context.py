"""What the clinician view reads from the EHR with the signed-in user's token: the patient
banner, each appointment's type, place and clinician, and our Tasks' current status there.
Every read is bounded (time, size, count) and may fail alone: the page then says what is
unavailable and shows our ids instead."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx

from connector.errors import FhirError
from connector.resources import parse_json
from outreach.staff.smart.launch import FHIR_ID
from outreach.staff.smart.session import SmartSession

log = logging.getLogger(__name__)

MAX_BODY = 512 * 1024  # one Patient, Appointment or a page of Tasks is far smaller
MAX_APPOINTMENTS = 10  # the newest shown; older ones keep their ids
MAX_ACTOR_READS = 10
MAX_TASKS = 20
READ_TIMEOUT_S = 5.0  # per request; the page waits at most TOTAL_TIMEOUT_S for all of them
TOTAL_TIMEOUT_S = 8.0
MAX_TEXT = 200
_REFERENCE = re.compile(r"(Appointment|Location|Practitioner|PractitionerRole)/"
                        r"([A-Za-z0-9\-.]{1,64})")


_ORDER = ["patient details", "some appointment details", "task status in the EHR",
          "details the EHR was too slow to give"]


@dataclass(frozen=True)
class Banner:
    name: str
    birth_date: str | None
    gender: str | None

    def born(self, today: date) -> str | None:
        """The birth date as a clinician reads it, with the age: "12 Mar 1961 (64 y)"."""
        if self.birth_date is None:
            return None
        try:
            born = date.fromisoformat(self.birth_date)
        except ValueError:
            return self.birth_date  # a partial date (1961 or 1961-03): as the EHR has it
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        return f"{born.day} {born:%b %Y} ({age} y)"


@dataclass(frozen=True)
class AppointmentDetails:
    kind: str | None  # appointmentType or serviceType, as the EHR names it
    location: str | None
    clinician: str | None
    status: str | None


@dataclass
class EhrContext:
    banner: Banner | None = None
    appointments: dict[str, AppointmentDetails] = field(default_factory=dict)
    task_status: dict[str, str] = field(default_factory=dict)  # "system|value" → status
    people: dict[str, str] = field(default_factory=dict)  # "Practitioner/{id}" → name
    unavailable: list[str] = field(default_factory=list)  # what could not be read, said so


class _Unreadable(Exception):
    pass


def _list(value: object) -> list[Any]:
    """A FHIR array as given, or empty for anything else (the EHR's JSON is not trusted)."""
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return (value.strip()[:MAX_TEXT] or None) if isinstance(value, str) else None


def _concept(value: object) -> str | None:
    """A CodeableConcept's text, else its first coding's display (or code)."""
    if not isinstance(value, dict):
        return None
    codings = _list(value.get("coding"))
    first = codings[0] if codings and isinstance(codings[0], dict) else {}
    return _text(value.get("text")) or _text(first.get("display")) or _text(first.get("code"))


def human_name(resource: dict[str, Any]) -> str | None:
    """The official (else first) HumanName as one line: its text, or given names and family."""
    names = [n for n in _list(resource.get("name")) if isinstance(n, dict)]
    if not names:
        return _text(resource.get("name"))  # a Location's name is a string
    name = next((n for n in names if n.get("use") == "official"), names[0])
    if _text(name.get("text")):
        return _text(name.get("text"))
    given = [g for g in _list(name.get("given")) if isinstance(g, str)]
    prefix = [p for p in _list(name.get("prefix")) if isinstance(p, str)]
    family = str(name["family"]) if isinstance(name.get("family"), str) else ""
    return _text(" ".join([*prefix, *given, family]))


async def _json(client: httpx.AsyncClient, url: str, params: dict[str, str] | None = None
                ) -> dict[str, Any]:
    try:
        async with client.stream("GET", url, params=params) as response:
            if response.status_code != 200:
                raise _Unreadable(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise _Unreadable("too large")
    except httpx.HTTPError as exc:
        raise _Unreadable(type(exc).__name__) from exc
    try:
        data = parse_json(bytes(body))
    except FhirError as exc:
        raise _Unreadable("not JSON") from exc
    if not isinstance(data, dict):
        raise _Unreadable("not a resource")
    return data


async def _banner(client: httpx.AsyncClient, base: str, patient: str) -> Banner:
    kind, _, ident = patient.partition("/")
    if kind != "Patient" or not FHIR_ID.fullmatch(ident):
        raise _Unreadable("not a patient reference")
    resource = await _json(client, f"{base}/Patient/{ident}")
    if resource.get("resourceType") != "Patient" or resource.get("id") != ident:
        raise _Unreadable("another resource")
    return Banner(human_name(resource) or "(no name recorded)", _text(resource.get("birthDate")),
                  _text(resource.get("gender")))


def _actors(appointment: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(reference, display) of each participant's actor."""
    found = []
    for participant in _list(appointment.get("participant")):
        actor = participant.get("actor") if isinstance(participant, dict) else None
        if isinstance(actor, dict) and isinstance(actor.get("reference"), str):
            found.append((actor["reference"], _text(actor.get("display"))))
    return found


async def _appointment(client: httpx.AsyncClient, base: str, reference: str
                       ) -> dict[str, Any]:
    resource = await _json(client, f"{base}/{reference}")
    if resource.get("resourceType") != "Appointment":
        raise _Unreadable("another resource")
    return resource


async def _names(client: httpx.AsyncClient, base: str, references: list[str]
                 ) -> dict[str, str]:
    """Names of the Locations and Practitioners the appointments name without a display."""
    async def one(reference: str) -> tuple[str, str | None]:
        try:
            return reference, human_name(await _json(client, f"{base}/{reference}"))
        except _Unreadable:
            return reference, None

    found = await asyncio.gather(*(one(r) for r in references[:MAX_ACTOR_READS]))
    return {ref: name for ref, name in found if name}


def _pick(actors: list[tuple[str, str | None]], names: dict[str, str], kinds: tuple[str, ...]
          ) -> str | None:
    for reference, display in actors:
        if reference.split("/")[0] in kinds:
            return display or names.get(reference)
    return None


async def _appointments(client: httpx.AsyncClient, base: str, references: list[str]
                        ) -> dict[str, AppointmentDetails]:
    wanted = [r for r in references if _REFERENCE.fullmatch(r) and
              r.startswith("Appointment/")][:MAX_APPOINTMENTS]

    async def one(reference: str) -> tuple[str, dict[str, Any] | None]:
        try:
            return reference, await _appointment(client, base, reference)
        except _Unreadable:
            return reference, None

    read = {ref: res for ref, res in await asyncio.gather(*(one(r) for r in wanted)) if res}
    missing = sorted({ref for res in read.values() for ref, display in _actors(res)
                      if display is None and _REFERENCE.fullmatch(ref) and
                      not ref.startswith("Appointment/")})
    names = await _names(client, base, missing) if missing else {}
    details = {}
    for reference, resource in read.items():
        types = _list(resource.get("serviceType"))
        service = _concept(types[0]) if types else None
        actors = _actors(resource)
        details[reference] = AppointmentDetails(
            _concept(resource.get("appointmentType")) or service,
            _pick(actors, names, ("Location",)),
            _pick(actors, names, ("Practitioner", "PractitionerRole")),
            _text(resource.get("status")))
    return details


async def _task_status(client: httpx.AsyncClient, base: str, identifiers: list[str]
                       ) -> dict[str, str]:
    """Our Tasks' status in the EHR, in one search by identifier (comma: any of them)."""
    wanted = identifiers[:MAX_TASKS]
    bundle = await _json(client, f"{base}/Task", {"identifier": ",".join(wanted),
                                                   "_count": str(len(wanted))})
    status: dict[str, str] = {}
    for entry in _list(bundle.get("entry")):
        task = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(task, dict) or task.get("resourceType") != "Task":
            continue
        for ident in _list(task.get("identifier")):
            key = f"{ident.get('system')}|{ident.get('value')}" if isinstance(ident, dict) \
                else ""
            if key in wanted and isinstance(task.get("status"), str):
                status[key] = task["status"]
    return status


async def read_context(session: SmartSession, appointments: list[str], tasks: list[str],
                       *, with_banner: bool = True, people: tuple[str, ...] = ()
                       ) -> EhrContext:
    """Everything the page reads from the EHR, concurrently, as the signed-in user (the
    patient only when a banner is to be shown; `people`, staff who wrote to the patient, by
    name)."""
    context = EhrContext()
    headers = {"Authorization": f"Bearer {session.access_token}",
               "Accept": "application/fhir+json"}
    base = session.iss.rstrip("/")
    async with httpx.AsyncClient(timeout=READ_TIMEOUT_S, headers=headers,
                                 follow_redirects=False) as client:
        async def banner() -> None:
            try:
                context.banner = await _banner(client, base, session.patient)
            except _Unreadable as exc:
                log.info("clinician view: %s not readable (%s)", session.patient, exc)
                context.unavailable.append("patient details")

        async def visits() -> None:
            context.appointments = await _appointments(client, base, appointments)
            if len(context.appointments) < min(len(appointments), MAX_APPOINTMENTS):
                context.unavailable.append("some appointment details")

        async def task_status() -> None:
            try:
                context.task_status = await _task_status(client, base, tasks)
            except _Unreadable as exc:
                log.info("clinician view: Task status not readable (%s)", exc)
                context.unavailable.append("task status in the EHR")

        async def names() -> None:
            wanted = sorted({p for p in people if _REFERENCE.fullmatch(p)})
            context.people = await _names(client, base, wanted)

        jobs = [*([banner()] if with_banner else []), visits(),
                *([task_status()] if tasks else []), *([names()] if people else [])]
        try:
            await asyncio.wait_for(asyncio.gather(*jobs), TOTAL_TIMEOUT_S)
        except TimeoutError:
            log.info("clinician view: EHR reads took over %ss", TOTAL_TIMEOUT_S)
            context.unavailable.append("details the EHR was too slow to give")
    context.unavailable.sort(key=_ORDER.index)  # as the page reads, whichever failed first
    return context
