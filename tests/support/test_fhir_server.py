"""Tests of the FHIR test server itself, against the real Node process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.fhir_server import FhirTestServer, fhir_server_session

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def server() -> Iterator[FhirTestServer]:
    # A short retry interval keeps the retry test quick; the window stays at the default.
    yield from fhir_server_session(env={"RESTHOOK_RETRY_INTERVAL_MS": "100"})


@pytest.fixture
def fhir(server: FhirTestServer) -> Iterator[httpx.Client]:
    server.reset()
    server.outage(None)
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        yield client


def appointment(patient: str = "Patient/x", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2030-01-01T10:00:00Z",
        "end": "2030-01-01T10:30:00Z",
        "participant": [{"actor": {"reference": patient}, "status": "accepted"}],
        **extra,
    }


def create(fhir: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = fhir.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_operation_outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"]
    return body


# -- REST basics ---------------------------------------------------------------------------


def test_create_and_read_patient(fhir: httpx.Client) -> None:
    response = fhir.post(
        "/Patient", json={"resourceType": "Patient", "id": "ignored", "name": [{"family": "Doe"}]}
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith(FHIR_JSON)
    patient = response.json()
    version = patient["meta"]["versionId"]
    assert patient["id"] != "ignored"  # R4: the server ignores an id sent with create
    assert response.headers["etag"] == f'W/"{version}"'
    assert response.headers["location"] == (
        f"{fhir.base_url}Patient/{patient['id']}/_history/{version}"
    )

    read = fhir.get(f"/Patient/{patient['id']}")
    assert read.status_code == 200
    assert read.json()["name"] == [{"family": "Doe"}]
    assert read.headers["etag"] == f'W/"{version}"'


def test_unknown_resource_is_404(fhir: httpx.Client) -> None:
    assert_operation_outcome(fhir.get("/Patient/does-not-exist"), 404)


def test_metadata(fhir: httpx.Client) -> None:
    response = fhir.get("/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert {"Patient", "Appointment", "Communication", "Subscription"} <= types


@pytest.mark.parametrize(
    "resource",
    [
        appointment(unknownElement=True),
        {k: v for k, v in appointment().items() if k != "status"},
        {k: v for k, v in appointment().items() if k != "participant"},
    ],
    ids=["unknown-element", "missing-status", "missing-participant"],
)
def test_invalid_resource_is_rejected(fhir: httpx.Client, resource: dict[str, Any]) -> None:
    assert_operation_outcome(fhir.post("/Appointment", json=resource), 400)
    assert fhir.get("/Appointment").json()["total"] == 0


def test_update_with_if_match(fhir: httpx.Client) -> None:
    created = create(fhir, appointment())
    url = f"/Appointment/{created['id']}"
    changed = {**created, "status": "cancelled"}

    stale = fhir.put(url, json=changed, headers={"If-Match": 'W/"not-the-version"'})
    assert_operation_outcome(stale, 412)

    version = created["meta"]["versionId"]
    updated = fhir.put(url, json=changed, headers={"If-Match": f'W/"{version}"'})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] != version
    assert updated.headers["etag"] == f'W/"{updated.json()["meta"]["versionId"]}"'

    history = fhir.get(f"{url}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["cancelled", "booked"]


def test_update_as_create_is_201(fhir: httpx.Client) -> None:
    body = {"resourceType": "Patient", "id": "client-chosen"}
    assert fhir.put("/Patient/client-chosen", json=body).status_code == 201
    assert fhir.put("/Patient/client-chosen", json=body).status_code == 200


def test_conditional_create_creates_once(fhir: httpx.Client) -> None:
    communication = {
        "resourceType": "Communication",
        "status": "completed",
        "identifier": [{"system": "http://x", "value": "abc"}],
    }
    headers = {"If-None-Exist": "identifier=http://x|abc"}
    first = fhir.post("/Communication", json=communication, headers=headers)
    assert first.status_code == 201
    second = fhir.post("/Communication", json=communication, headers=headers)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert fhir.get("/Communication").json()["total"] == 1


def test_transaction_rolls_back_on_failure(fhir: httpx.Client) -> None:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b0f8a54-8a0b-4d4c-9a59-0d7a4c1d2e3f",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": appointment("urn:uuid:5b0f8a54-8a0b-4d4c-9a59-0d7a4c1d2e3f"),
                "request": {"method": "POST", "url": "Appointment"},
            },
        ],
    }
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201", "201"]
    patient_ref = entries[1]["resource"]["participant"][0]["actor"]["reference"]
    assert patient_ref == entries[0]["response"]["location"]

    bundle["entry"][1]["resource"] = appointment(unknownElement=1)
    assert_operation_outcome(fhir.post("", json=bundle), 400)
    assert fhir.get("/Patient").json()["total"] == 1  # the failed transaction left nothing


def _conditional_transaction(count: int, bad: int | None = None) -> dict[str, Any]:
    def communication(index: int) -> dict[str, Any]:
        extra = {"unknownElement": 1} if index == bad else {}
        return {"resourceType": "Communication", "status": "completed",
                "identifier": [{"system": "http://x", "value": f"c{index}"}], **extra}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": communication(i),
         "request": {"method": "POST", "url": "Communication",
                     "ifNoneExist": f"identifier=http://x|c{i}"}} for i in range(count)]}


def test_a_large_conditional_transaction_is_taken_whole_or_not_at_all(
    fhir: httpx.Client, server: FhirTestServer,
) -> None:
    # Medplum alone refuses more than 8 entries once one is conditional; HAPI takes them.
    refused = fhir.post("", json=_conditional_transaction(20, bad=17))
    assert_operation_outcome(refused, 400)
    assert fhir.get("/Communication").json()["total"] == 0  # the first 16 rolled back too

    response = fhir.post("", json=_conditional_transaction(20))
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201"] * 20
    again = fhir.post("", json=_conditional_transaction(20))  # conditional: nothing twice
    assert [e["response"]["status"] for e in again.json()["entry"]] == ["200"] * 20
    assert fhir.get("/Communication").json()["total"] == 20

    server.features(max_transaction_entries=10)  # an EHR that caps a transaction's size
    assert_operation_outcome(fhir.post("", json=_conditional_transaction(11)), 400)
    assert fhir.post("", json=_conditional_transaction(10)).status_code == 200


# -- search --------------------------------------------------------------------------------


def test_last_updated_search(fhir: httpx.Client) -> None:
    older = create(fhir, appointment())
    time.sleep(0.01)
    newer = create(fhir, appointment())
    since = older["meta"]["lastUpdated"]
    bundle = fhir.get("/Appointment", params={"_lastUpdated": f"gt{since}"}).json()
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [newer["id"]]
    assert bundle["entry"][0]["fullUrl"] == f"{fhir.base_url}Appointment/{newer['id']}"


def test_paging_next_links(fhir: httpx.Client) -> None:
    ids = {create(fhir, appointment())["id"] for _ in range(5)}
    seen: list[str] = []
    url: str | None = f"{fhir.base_url}Appointment?_count=2&status=booked"
    pages = 0
    while url is not None:
        bundle = fhir.get(url).json()
        pages += 1
        assert bundle["total"] == 5
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(str(fhir.base_url))
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = links.get("next")
    assert pages == 3
    assert sorted(seen) == sorted(ids)


def test_post_search_links_carry_the_form_parameters(fhir: httpx.Client) -> None:
    for _ in range(3):
        create(fhir, appointment())
    response = fhir.post("/Appointment/_search", data={"_count": "2", "status": "booked"})
    links = {link["relation"]: link["url"] for link in response.json()["link"]}
    second = fhir.get(links["next"]).json()
    assert second["total"] == 3
    assert len(second["entry"]) == 1


def test_unknown_search_parameter_is_400(fhir: httpx.Client) -> None:
    # MemoryRepository would silently match nothing; HAPI (and this server) say 400.
    assert_operation_outcome(fhir.get("/Appointment", params={"_lastupdated": "gt2020"}), 400)


# -- admin endpoints -----------------------------------------------------------------------


def test_outage_and_recovery(server: FhirTestServer, fhir: httpx.Client) -> None:
    server.outage(503)
    assert_operation_outcome(fhir.get("/Patient"), 503)
    assert_operation_outcome(fhir.post("/Patient", json={"resourceType": "Patient"}), 503)
    assert server.deliveries() == []  # admin endpoints keep working during an outage
    server.outage(None)
    assert fhir.get("/Patient").status_code == 200


def test_reset_wipes_data(server: FhirTestServer, fhir: httpx.Client) -> None:
    created = create(fhir, {"resourceType": "Patient"})
    server.reset()
    assert fhir.get(f"/Patient/{created['id']}").status_code == 404
    assert fhir.get("/Patient").json()["total"] == 0


# -- rest-hook subscriptions ---------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP endpoint recording what the server's rest-hook sends it."""

    fail_first: int = 0
    requests: list[Received] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def record(self, handler: BaseHTTPRequestHandler) -> int:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        with self.condition:
            self.requests.append(
                Received(handler.command, handler.path, dict(handler.headers.items()), body)
            )
            self.condition.notify_all()
            return 500 if len(self.requests) <= self.fail_first else 200

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.condition:
            assert self.condition.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"expected {count} requests, got {self.requests}"
            )
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            status = state.record(self)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = do_DELETE = handle_any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def subscription(endpoint: str, payload: str | None = FHIR_JSON) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "header": ["X-Secret: s3cret"],
    }
    if payload is not None:
        channel["payload"] = payload
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": "Appointment?",
        "channel": channel,
    }


def test_rest_hook_with_payload(fhir: httpx.Client, receiver: Receiver) -> None:
    sub = create(fhir, subscription(receiver.url))
    assert sub["status"] == "active"  # like HAPI, requested becomes active
    create(fhir, {"resourceType": "Patient"})  # other types are not delivered

    created = create(fhir, appointment())
    (request,) = receiver.wait_for(1)
    assert request.method == "PUT"
    assert request.path == f"/hook/Appointment/{created['id']}"
    assert request.headers["X-Secret"] == "s3cret"
    assert request.headers["Content-Type"] == FHIR_JSON
    assert json.loads(request.body) == created

    assert fhir.delete(f"/Appointment/{created['id']}").status_code == 200
    deleted = receiver.wait_for(2)[1]
    assert (deleted.method, deleted.path) == ("DELETE", f"/hook/Appointment/{created['id']}")


def test_rest_hook_without_payload_posts_empty(fhir: httpx.Client, receiver: Receiver) -> None:
    create(fhir, subscription(receiver.url, payload=None))
    create(fhir, appointment())
    (request,) = receiver.wait_for(1)
    assert (request.method, request.path, request.body) == ("POST", "/hook", b"")
    assert request.headers["X-Secret"] == "s3cret"


def test_rest_hook_delivers_in_order(fhir: httpx.Client, receiver: Receiver) -> None:
    create(fhir, subscription(receiver.url))
    current = create(fhir, appointment())
    versions = [current["meta"]["versionId"]]
    for status in ["arrived", "fulfilled", "noshow"]:
        response = fhir.put(f"/Appointment/{current['id']}", json={**current, "status": status})
        current = response.json()
        versions.append(current["meta"]["versionId"])
    received = receiver.wait_for(4)
    assert [json.loads(r.body)["meta"]["versionId"] for r in received] == versions


def test_rest_hook_retries_failures(
    server: FhirTestServer, fhir: httpx.Client, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    sub = create(fhir, subscription(receiver.url))
    create(fhir, appointment())
    assert len(receiver.wait_for(3)) == 3
    log = server.wait_for_deliveries(lambda d: len(d) == 3)
    assert [d["status"] for d in log] == [500, 500, 200]
    assert all(d["subscription"] == f"Subscription/{sub['id']}" for d in log)


def test_rest_hook_gives_up_after_window() -> None:
    env = {"RESTHOOK_RETRY_SECONDS": "1", "RESTHOOK_RETRY_INTERVAL_MS": "200"}
    with FhirTestServer(env=env) as short, httpx.Client(base_url=short.base_url) as fhir:
        # Nothing listens on port 9 (discard) on 127.0.0.1, so every attempt fails to connect.
        create(fhir, subscription("http://127.0.0.1:9/hook"))
        create(fhir, appointment())
        time.sleep(2.0)
        log = short.deliveries()
        assert 2 <= len(log) <= 7
        assert all("error" in d for d in log)
        time.sleep(0.5)
        assert short.deliveries() == log  # no more attempts after the window


def test_outage_can_skip_some_requests_and_end_by_itself(
    server: FhirTestServer, fhir: httpx.Client
) -> None:
    server.outage(429, after=1, count=2, retry_after=3)
    assert fhir.get("/Patient").status_code == 200
    throttled = fhir.get("/Patient")
    assert_operation_outcome(throttled, 429)
    assert throttled.headers["Retry-After"] == "3"
    assert fhir.get("/Patient").status_code == 429
    assert fhir.get("/Patient").status_code == 200  # over after two failures


def test_a_server_without_last_updated(server: FhirTestServer, fhir: httpx.Client) -> None:
    server.features(without_search_params=["_lastUpdated"])
    assert_operation_outcome(fhir.get("/Appointment", params={"_lastUpdated": "gt2020-01-01"}),
                             400)
    assert_operation_outcome(fhir.get("/Appointment", params={"_sort": "_lastUpdated"}), 400)
    assert fhir.get("/Appointment", params={"date": "ge2020-01-01"}).status_code == 200
    metadata = fhir.get("/metadata").json()
    appointment_support = next(r for r in metadata["rest"][0]["resource"]
                               if r["type"] == "Appointment")
    names = {p["name"] for p in appointment_support["searchParam"]}
    assert "_lastUpdated" not in names and "date" in names
    server.reset()
    assert fhir.get("/Appointment", params={"_lastUpdated": "gt2020-01-01"}).status_code == 200


def test_an_epic_like_server_has_no_subscription_and_no_last_updated(
    server: FhirTestServer, fhir: httpx.Client,
) -> None:
    server.epic_like()
    assert_operation_outcome(fhir.get("/Subscription"), 400)
    assert_operation_outcome(fhir.post("/Subscription", json={"resourceType": "Subscription"}),
                             400)
    assert_operation_outcome(fhir.get("/Appointment", params={"_lastUpdated": "gt2020-01-01"}),
                             400)
    types = {r["type"] for r in fhir.get("/metadata").json()["rest"][0]["resource"]}
    assert "Subscription" not in types and "Appointment" in types


def test_a_silent_capability_statement_lists_nothing_but_everything_works(
    server: FhirTestServer, fhir: httpx.Client,
) -> None:
    server.features(silent_metadata=True)
    metadata = fhir.get("/metadata").json()
    assert metadata["resourceType"] == "CapabilityStatement"
    assert metadata["rest"][0]["resource"] == []
    assert fhir.get("/Appointment").status_code == 200


# -- scheduling: Schedule/Slot search, and the IHE operations mode --------------------------------


def _free_slots(fhir: httpx.Client) -> tuple[str, list[str]]:
    schedule = create(fhir, {"resourceType": "Schedule", "active": True,
                             "actor": [{"reference": "Practitioner/lee"},
                                       {"reference": "Location/main"}]})
    create(fhir, {"resourceType": "Schedule", "actor": [{"reference": "Practitioner/lee"}]})
    slots = [create(fhir, {"resourceType": "Slot", "status": status,
                           "schedule": {"reference": f"Schedule/{schedule['id']}"},
                           "start": f"2030-01-01T{hour}:00:00Z",
                           "end": f"2030-01-01T{hour}:30:00Z"})["id"]
             for hour, status in [("12", "free"), ("09", "busy"), ("10", "free"), ("11", "free")]]
    return f"Schedule/{schedule['id']}", slots


def test_schedules_by_actor_and_free_slots_by_schedule_and_start(fhir: httpx.Client) -> None:
    schedule, slots = _free_slots(fhir)
    both = fhir.get("/Schedule", params=[("actor", "Practitioner/lee"),
                                         ("actor", "Location/main")]).json()
    assert [f"Schedule/{e['resource']['id']}" for e in both["entry"]] == [schedule]
    page = fhir.get("/Slot", params=[
        ("schedule", f"{schedule},Schedule/other"), ("status", "free"),
        ("start", "ge2030-01-01T09:00:00Z"), ("start", "lt2030-01-01T12:00:00Z"),
        ("_sort", "start"), ("_count", "1")]).json()
    assert [e["resource"]["id"] for e in page["entry"]] == [slots[2]]  # 10:00; 09:00 is busy
    assert next(link for link in page["link"] if link["relation"] == "next")


def _operation(fhir: httpx.Client, name: str, *parameter: dict[str, Any]) -> httpx.Response:
    return fhir.post(f"/Appointment/${name}",
                     json={"resourceType": "Parameters", "parameter": list(parameter)})


def test_ihe_scheduling_mode_finds_holds_and_books(
    server: FhirTestServer, fhir: httpx.Client,
) -> None:
    _, slots = _free_slots(fhir)
    assert _operation(fhir, "find").status_code == 404  # off until switched on
    server.features(ihe_scheduling=True)
    appointment_support = next(r for r in fhir.get("/metadata").json()["rest"][0]["resource"]
                               if r["type"] == "Appointment")
    assert {op["name"] for op in appointment_support["operation"]} == {"find", "hold", "book"}

    found = _operation(fhir, "find",
                       {"name": "start", "valueDateTime": "2030-01-01T00:00:00Z"},
                       {"name": "end", "valueDateTime": "2030-01-02T00:00:00Z"},
                       {"name": "practitioner",
                        "valueReference": {"reference": "Practitioner/lee"}},
                       {"name": "_count", "valueInteger": 2}).json()
    proposals = [e["resource"] for e in found["entry"]]
    assert found["total"] == 3 and [p["status"] for p in proposals] == ["proposed", "proposed"]
    assert [p["slot"][0]["reference"] for p in proposals] == [f"Slot/{slots[2]}",
                                                               f"Slot/{slots[3]}"]
    hold = {"name": "appointment-reference",
            "valueReference": {"reference": f"Appointment/{proposals[0]['id']}"}}
    held = _operation(fhir, "hold", hold)
    assert held.json()["entry"][0]["resource"]["status"] == "pending"
    assert fhir.get(f"/Slot/{slots[2]}").json()["status"] == "busy-tentative"
    assert_operation_outcome(_operation(fhir, "hold", hold), 404)  # a proposal is held once

    patient = create(fhir, {"resourceType": "Appointment", "status": "waitlist",
                            "participant": [{"actor": {"reference": "Patient/x"},
                                             "status": "accepted"}]})
    booked = _operation(fhir, "book", hold, {"name": "appointment-resource", "resource": {
        **patient, "status": "booked", "start": proposals[0]["start"],
        "end": proposals[0]["end"], "slot": proposals[0]["slot"]}}).json()
    assert booked["entry"][0]["resource"]["status"] == "booked"
    assert fhir.get(f"/Slot/{slots[2]}").json()["status"] == "busy"
    stale = _operation(fhir, "book", {"name": "appointment-resource", "resource": {
        **patient, "status": "booked"}}).json()  # patient's meta.versionId is the old one
    assert stale["entry"][0]["resource"]["issue"][0]["code"] == "conflict"
    server.reset()
    assert "operation" not in next(r for r in fhir.get("/metadata").json()["rest"][0]["resource"]
                                   if r["type"] == "Appointment")
