"""FHIR search for the demo's EHR: the parameters the scheduler, the waitlist and the send-time
checks ask for, matched as an R4 server matches them. A parameter not listed here is refused
(FhirUnsupported) rather than ignored: ignoring it would widen the result."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from connector.errors import FhirUnsupported, InvalidResource
from connector.slots import parse_instant, service_types

Params = Mapping[str, str | int | list[str]]
# Whether one resource matches one value of a parameter (a value may list alternatives: "a,b").
Test = Callable[[dict[str, Any], str], bool]

MAX_VALUES = 20  # alternatives and repetitions read from one parameter
_PREFIXES = {"eq": datetime.__eq__, "ne": datetime.__ne__, "gt": datetime.__gt__,
             "ge": datetime.__ge__, "lt": datetime.__lt__, "le": datetime.__le__}


def _references(values: Iterable[object]) -> set[str]:
    return {str(v.get("reference")) for v in values if isinstance(v, dict)}


def _participants(prefix: str) -> Test:
    """Appointment `patient`, `practitioner`, `location`, `actor`: a participant's actor."""
    def test(resource: dict[str, Any], value: str) -> bool:
        actors = _references(p.get("actor") for p in resource.get("participant", []))
        return value in actors and value.startswith(prefix)
    return test


def _reference(element: str) -> Test:
    def test(resource: dict[str, Any], value: str) -> bool:
        found = resource.get(element)
        return value in _references(found if isinstance(found, list) else [found])
    return test


def _token(element: str) -> Test:
    return lambda resource, value: str(resource.get(element)) == value


def _service_type(resource: dict[str, Any], value: str) -> bool:
    system, _, code = value.rpartition("|")
    return any(code == c and (not system or system == s) for s, c in service_types(resource))


def _date(element: str) -> Test:
    def test(resource: dict[str, Any], value: str) -> bool:
        prefix = value[:2] if value[:2] in _PREFIXES else "eq"
        bound = parse_instant(value[2:] if value[:2] in _PREFIXES else value)
        if bound is None:
            raise InvalidResource(f"not an instant with a zone: {value[:40]!r}")
        moment = parse_instant(resource.get(element))
        return moment is not None and bool(_PREFIXES[prefix](moment, bound))
    return test


SEARCHES: dict[str, dict[str, Test]] = {
    "Appointment": {"status": _token("status"), "patient": _participants("Patient/"),
                    "practitioner": _participants("Practitioner/"),
                    "location": _participants("Location/"), "actor": _participants(""),
                    "service-type": _service_type, "date": _date("start")},
    "Schedule": {"actor": _reference("actor"), "active": lambda r, v: str(
        r.get("active", True)).lower() == v},
    "Slot": {"schedule": _reference("schedule"), "status": _token("status"),
             "start": _date("start")},
    "RelatedPerson": {"patient": _reference("patient")},
}
_PAGING = {"_count", "_sort"}


def _values(value: str | int | list[str]) -> list[list[str]]:
    """Repetitions (all must match), each a list of alternatives (any may match)."""
    repeated = value if isinstance(value, list) else [str(value)]
    return [str(v).split(",")[:MAX_VALUES] for v in repeated[:MAX_VALUES]]


def _matcher(resource_type: str, params: Params) -> Callable[[dict[str, Any]], bool]:
    tests = SEARCHES.get(resource_type, {})
    checks: list[tuple[Test, list[str]]] = []
    for name, value in params.items():
        if name in _PAGING:
            continue
        test = tests.get(name)
        if test is None:
            raise FhirUnsupported(f"the demo EHR does not search {resource_type} by {name}")
        checks += [(test, alternatives) for alternatives in _values(value)]
    return lambda resource: all(any(test(resource, v) for v in alternatives)
                                for test, alternatives in checks)


def search(resource_type: str, resources: Iterable[dict[str, Any]],
           params: Params) -> list[dict[str, Any]]:
    """The resources that match every parameter, ordered by `_sort` (`start` or `-start`)."""
    matches = _matcher(resource_type, params)
    found = [r for r in resources if matches(r)]
    order = str(params.get("_sort", ""))
    if order not in ("", "start", "-start"):
        raise FhirUnsupported(f"the demo EHR does not sort by {order[:40]!r}")
    if order:
        found.sort(key=_start, reverse=order.startswith("-"))
    return found


def _start(resource: dict[str, Any]) -> tuple[bool, datetime]:
    moment = parse_instant(resource.get("start"))
    return (moment is None, moment or datetime.min.replace(tzinfo=UTC))
