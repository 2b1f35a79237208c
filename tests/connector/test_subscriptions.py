"""R4 rest-hook Subscriptions: the shape we ask for, and creating or repairing them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from connector.client import FhirClient
from connector.resources import validate_resource
from connector.subscriptions import SECRET_HEADER, desired, ensure, status

BASE = "http://ehr.test/fhir"
ENDPOINT = "https://outreach.example.org/fhir/notify"
SECRET = "s3cret"


def test_desired_subscription_has_no_status_filter() -> None:
    subscription = desired("Appointment", ENDPOINT, SECRET)

    assert subscription["criteria"] == "Appointment?"
    assert "status" not in subscription["criteria"]
    assert subscription["channel"] == {
        "type": "rest-hook",
        "endpoint": ENDPOINT,
        "payload": "application/fhir+json",
        "header": [f"{SECRET_HEADER}: {SECRET}"],
    }
    assert validate_resource(subscription, "Subscription") is subscription


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE) as fhir:
        yield fhir


def existing(rtype: str, sub_id: str, **changes: Any) -> dict[str, Any]:
    return {**desired(rtype, ENDPOINT, SECRET), "id": sub_id, "status": "active", **changes}


def serve(server: respx.MockRouter, *subscriptions: dict[str, Any]) -> dict[str, respx.Route]:
    searchset = {"resourceType": "Bundle", "type": "searchset",
                 "entry": [{"resource": s, "search": {"mode": "match"}} for s in subscriptions]}

    def echo(status: int) -> Any:
        def answer(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            return httpx.Response(status, json={"id": "new-sub", **body, "status": "requested"})
        return answer

    return {
        "search": server.get("/Subscription").mock(return_value=httpx.Response(200,
                                                                               json=searchset)),
        "create": server.post("/Subscription").mock(side_effect=echo(201)),
        "update": server.put(url__regex=r"/Subscription/[^/]+$").mock(side_effect=echo(200)),
    }


def test_missing_subscriptions_are_created(server: respx.MockRouter, client: FhirClient) -> None:
    routes = serve(server)

    states = ensure(client, ["Appointment", "Encounter"], ENDPOINT, SECRET)

    assert [(s.resource_type, s.action) for s in states] == [
        ("Appointment", "created"), ("Encounter", "created"),
    ]
    assert routes["create"].call_count == 2
    sent = [json.loads(call.request.content) for call in routes["create"].calls]
    assert sent == [desired(rtype, ENDPOINT, SECRET) for rtype in ("Appointment", "Encounter")]
    assert routes["update"].call_count == 0


def test_a_subscription_for_another_endpoint_is_not_ours(
    server: respx.MockRouter, client: FhirClient
) -> None:
    other = existing("Appointment", "theirs", channel={
        **desired("Appointment", ENDPOINT, SECRET)["channel"], "endpoint": "https://other.test",
    })
    routes = serve(server, other)

    (state,) = ensure(client, ["Appointment"], ENDPOINT, SECRET)

    assert state.action == "created"
    assert routes["update"].call_count == 0


@pytest.mark.parametrize(
    "broken",
    [
        {"status": "error", "error": "delivery failed"},
        {"status": "off"},
        {"channel": {**desired("Appointment", ENDPOINT, "old-secret")["channel"]}},
        {"channel": {**desired("Appointment", ENDPOINT, SECRET)["channel"], "payload": ""}},
        {"criteria": "Appointment?status=booked"},
    ],
    ids=["error", "off", "stale-secret", "no-payload", "status-filter"],
)
def test_broken_subscriptions_are_repaired_in_place(
    server: respx.MockRouter, client: FhirClient, broken: dict[str, Any]
) -> None:
    routes = serve(server, existing("Appointment", "sub-1", **broken))

    (state,) = ensure(client, ["Appointment"], ENDPOINT, SECRET)

    assert state.action == "repaired"
    assert state.subscription_id == "sub-1"
    assert routes["update"].calls.last.request.url.path == "/fhir/Subscription/sub-1"
    body = json.loads(routes["update"].calls.last.request.content)
    assert body == {**desired("Appointment", ENDPOINT, SECRET), "id": "sub-1"}
    assert routes["create"].call_count == 0


def test_matching_subscription_is_left_alone(server: respx.MockRouter, client: FhirClient) -> None:
    routes = serve(server, existing("Appointment", "sub-1"))

    (state,) = ensure(client, ["Appointment"], ENDPOINT, SECRET)

    assert (state.action, state.subscription_id, state.status) == ("unchanged", "sub-1", "active")
    assert routes["create"].call_count == routes["update"].call_count == 0


def test_status_reports_missing_and_errored_subscriptions(
    server: respx.MockRouter, client: FhirClient
) -> None:
    routes = serve(server, existing("Appointment", "sub-1", status="error",
                                    error="endpoint answered 401"))

    appointment, encounter = status(client, ["Appointment", "Encounter"], ENDPOINT)

    assert (appointment.status, appointment.error) == ("error", "endpoint answered 401")
    assert (encounter.status, encounter.action, encounter.subscription_id) == (
        "missing", "missing", None,
    )
    assert routes["create"].call_count == routes["update"].call_count == 0
