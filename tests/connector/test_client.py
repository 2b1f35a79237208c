"""FhirClient against a mocked FHIR server (respx): reads, errors, retries, paging, conditional
create. The mock stands in for what the test server cannot do on demand (exact status sequences,
Retry-After dates, network errors); tests/support/test_fhir_server.py checks the real one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from connector.client import FhirClient, RetryPolicy
from connector.errors import (
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirPreconditionFailed,
    FhirUnavailable,
)

BASE = "http://ehr.test/fhir/r4"
DEMO = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "demo"
APPOINTMENT: dict[str, Any] = json.loads(
    (DEMO / "10-appointment-ana-v1-booked.json").read_text(encoding="utf-8")
)
NOT_FOUND = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "not-found",
               "diagnostics": "Resource Appointment/gone is not known"}],
}


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[FhirClient]:
    with FhirClient(BASE + "/", token="t0ken", sleep=sleeps.append) as fhir:
        yield fhir


def fhir_json(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body,
                          headers={"Content-Type": "application/fhir+json", **headers})


def test_read_returns_the_resource(server: respx.MockRouter, client: FhirClient) -> None:
    route = server.get("/Appointment/appt-ana").mock(return_value=fhir_json(200, APPOINTMENT))

    assert client.read("Appointment", "appt-ana") == APPOINTMENT
    request = route.calls.last.request
    assert request.headers["Accept"] == "application/fhir+json"
    assert request.headers["Authorization"] == "Bearer t0ken"


def test_404_raises_not_found_carrying_the_outcome(
    server: respx.MockRouter, client: FhirClient
) -> None:
    server.get("/Appointment/gone").mock(return_value=fhir_json(404, NOT_FOUND))

    with pytest.raises(FhirNotFound) as info:
        client.read("Appointment", "gone")

    assert info.value.status == 404
    assert info.value.outcome == NOT_FOUND


def test_410_gone_is_not_found_too(server: respx.MockRouter, client: FhirClient) -> None:
    server.get("/Appointment/deleted").mock(return_value=httpx.Response(410))

    with pytest.raises(FhirNotFound) as info:
        client.read("Appointment", "deleted")

    assert info.value.outcome["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("status", "error"),
    [(409, FhirConflict), (412, FhirPreconditionFailed), (400, FhirError)],
)
def test_other_errors_map_to_the_hierarchy(
    server: respx.MockRouter, client: FhirClient, status: int, error: type[FhirError]
) -> None:
    server.get("/Appointment/x").mock(return_value=fhir_json(status, NOT_FOUND))

    with pytest.raises(error) as info:
        client.read("Appointment", "x")

    assert not isinstance(info.value, FhirUnavailable)
    assert info.value.status == status


def test_503_with_retry_after_is_unavailable_with_the_delay(
    server: respx.MockRouter, client: FhirClient
) -> None:
    server.get("/Appointment/appt-ana").mock(
        return_value=httpx.Response(503, text="maintenance", headers={"Retry-After": "120"})
    )

    with pytest.raises(FhirUnavailable) as info:
        client.read("Appointment", "appt-ana")

    assert info.value.status == 503
    assert info.value.retry_after == 120.0


def test_429_without_retry_after_is_unavailable(
    server: respx.MockRouter, client: FhirClient
) -> None:
    server.get("/Appointment/appt-ana").mock(return_value=httpx.Response(429))

    with pytest.raises(FhirUnavailable) as info:
        client.read("Appointment", "appt-ana")

    assert info.value.retry_after is None


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ReadTimeout])
def test_network_failure_is_unavailable(
    server: respx.MockRouter, client: FhirClient, failure: type[Exception]
) -> None:
    server.get("/Appointment/appt-ana").mock(side_effect=failure)

    with pytest.raises(FhirUnavailable) as info:
        client.read("Appointment", "appt-ana")

    assert isinstance(info.value.__cause__, httpx.TransportError)


def test_non_json_answer_is_an_error_not_a_crash(
    server: respx.MockRouter, client: FhirClient
) -> None:
    server.get("/Appointment/appt-ana").mock(return_value=httpx.Response(200, text="<html>"))

    with pytest.raises(FhirError, match="non-JSON"):
        client.read("Appointment", "appt-ana")


def appointment(n: int) -> dict[str, Any]:
    return {**APPOINTMENT, "id": f"appt-{n}"}


def bundle(entries: list[dict[str, Any]], next_page: int | None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/Appointment"}]
    if next_page is not None:
        links.append({"relation": "next",
                      "url": f"{BASE}?_getpages=abc123&_getpagesoffset={next_page}&_count=2"})
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def match(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"{BASE}/Appointment/{resource['id']}", "resource": resource,
            "search": {"mode": "match"}}


PATIENT = {"resourceType": "Patient", "id": "ana"}
WARNING = {"resourceType": "OperationOutcome",
           "issue": [{"severity": "warning", "code": "processing", "diagnostics": "slow"}]}
PAGES = {
    None: bundle([match(appointment(1)), match(appointment(2)),
                  {"resource": PATIENT, "search": {"mode": "include"}}], next_page=2),
    "2": bundle([{"resource": WARNING, "search": {"mode": "outcome"}},
                 match(appointment(3)), match(appointment(4))], next_page=4),
    "4": bundle([match(appointment(5))], next_page=None),
}


def test_search_follows_next_links_and_yields_only_matches(
    server: respx.MockRouter, client: FhirClient
) -> None:
    first = server.get("/Appointment", params={"status": "booked"}).mock(
        return_value=fhir_json(200, PAGES[None])
    )
    more = server.get("/", params={"_getpages": "abc123"}).mock(
        side_effect=lambda request: fhir_json(
            200, PAGES[request.url.params["_getpagesoffset"]]
        )
    )

    found = list(client.search("Appointment", {"status": "booked", "_count": 2}))

    assert [r["id"] for r in found] == [f"appt-{n}" for n in range(1, 6)]
    assert first.call_count == 1 and more.call_count == 2
    assert first.calls.last.request.url.params["_count"] == "2"


def test_search_pages_lazily(server: respx.MockRouter, client: FhirClient) -> None:
    server.get("/Appointment").mock(return_value=fhir_json(200, PAGES[None]))
    more = server.get("/").mock(return_value=fhir_json(200, PAGES["4"]))

    results = client.search("Appointment")
    assert next(results)["id"] == "appt-1"

    assert more.call_count == 0


def test_search_failure_on_a_later_page_is_raised(
    server: respx.MockRouter, client: FhirClient
) -> None:
    server.get("/Appointment").mock(return_value=fhir_json(200, PAGES[None]))
    server.get("/").mock(return_value=httpx.Response(502))

    with pytest.raises(FhirUnavailable):
        list(client.search("Appointment"))


COMMUNICATION = {"resourceType": "Communication", "status": "completed",
                 "identifier": [{"system": "urn:test", "value": "m1"}]}


@pytest.mark.parametrize(("status", "created"), [(201, True), (200, False)])
def test_conditional_create(
    server: respx.MockRouter, client: FhirClient, status: int, created: bool
) -> None:
    stored = {**COMMUNICATION, "id": "c1", "meta": {"versionId": "1"}}
    route = server.post("/Communication").mock(return_value=fhir_json(status, stored))

    result = client.create(COMMUNICATION, if_none_exist="identifier=urn:test|m1")

    assert result == (stored, created)
    request = route.calls.last.request
    assert request.headers["If-None-Exist"] == "identifier=urn:test|m1"
    assert request.headers["Content-Type"] == "application/fhir+json"
    assert json.loads(request.content) == COMMUNICATION


def test_plain_create_sends_no_condition(server: respx.MockRouter, client: FhirClient) -> None:
    route = server.post("/Communication").mock(
        return_value=fhir_json(201, {**COMMUNICATION, "id": "c2"})
    )

    client.create(COMMUNICATION)

    assert "If-None-Exist" not in route.calls.last.request.headers


def test_update_with_if_match_losing_a_race(server: respx.MockRouter, client: FhirClient) -> None:
    route = server.put("/Appointment/appt-ana").mock(return_value=httpx.Response(412))

    with pytest.raises(FhirPreconditionFailed):
        client.update(APPOINTMENT, if_match='W/"1"')

    assert route.calls.last.request.headers["If-Match"] == 'W/"1"'


# -- retries -------------------------------------------------------------------------------------


def test_get_is_retried_after_503_and_429_then_succeeds(
    server: respx.MockRouter, client: FhirClient, sleeps: list[float]
) -> None:
    route = server.get("/Appointment/appt-ana").mock(side_effect=[
        httpx.Response(503), httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.ConnectError("refused"), fhir_json(200, APPOINTMENT),
    ])

    assert client.read("Appointment", "appt-ana") == APPOINTMENT

    assert route.call_count == 4
    assert len(sleeps) == 3
    assert sleeps[1] == 2.0  # Retry-After honoured
    policy = RetryPolicy()
    assert 0 <= sleeps[0] <= policy.base_delay and 0 <= sleeps[2] <= policy.base_delay * 4


def test_retries_are_bounded(
    server: respx.MockRouter, client: FhirClient, sleeps: list[float]
) -> None:
    route = server.get("/Appointment/appt-ana").mock(return_value=httpx.Response(502))

    with pytest.raises(FhirUnavailable):
        client.read("Appointment", "appt-ana")

    assert route.call_count == RetryPolicy().attempts
    assert len(sleeps) == RetryPolicy().attempts - 1


def test_a_retry_after_longer_than_the_cap_is_not_waited_for(
    server: respx.MockRouter, client: FhirClient, sleeps: list[float]
) -> None:
    route = server.get("/Appointment/appt-ana").mock(
        return_value=httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    )

    with pytest.raises(FhirUnavailable) as info:
        client.read("Appointment", "appt-ana")

    assert route.call_count == 1 and sleeps == []
    assert info.value.retry_after is not None and info.value.retry_after > 3600


def test_a_plain_create_is_never_retried(
    server: respx.MockRouter, client: FhirClient, sleeps: list[float]
) -> None:
    route = server.post("/Communication").mock(return_value=httpx.Response(503))

    with pytest.raises(FhirUnavailable):
        client.create(COMMUNICATION)

    assert route.call_count == 1 and sleeps == []


def test_a_conditional_create_is_retried(
    server: respx.MockRouter, client: FhirClient, sleeps: list[float]
) -> None:
    stored = {**COMMUNICATION, "id": "c1"}
    route = server.post("/Communication").mock(side_effect=[
        httpx.ReadTimeout("slow"), fhir_json(200, stored),
    ])

    assert client.create(COMMUNICATION, if_none_exist="identifier=urn:test|m1") == (stored, False)
    assert route.call_count == 2 and len(sleeps) == 1


def test_a_4xx_is_not_retried(
    server: respx.MockRouter, client: FhirClient, sleeps: list[float]
) -> None:
    route = server.get("/Appointment/x").mock(return_value=fhir_json(400, NOT_FOUND))

    with pytest.raises(FhirError):
        client.read("Appointment", "x")

    assert route.call_count == 1 and sleeps == []


def test_search_accepts_repeated_parameters(server: respx.MockRouter, client: FhirClient) -> None:
    route = server.get("/Appointment").mock(return_value=fhir_json(200, PAGES["4"]))

    list(client.search("Appointment", {"date": ["ge2026-01-01", "le2026-02-01"]}))

    assert route.calls.last.request.url.params.get_list("date") == ["ge2026-01-01", "le2026-02-01"]
