"""The rest-hook receiver: authentication, bad input, duplicates, deletes and pings."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from connector.subscriptions import SECRET_HEADER
from outreach.api.app import create_app
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.ports import Runtime
from outreach.intake import group_commit
from outreach.intake.ingest import IngestResult
from outreach.store.models import Enrollment, ResourceChangeRecord, ScheduledStep, StepState
from tests.conftest import WEBHOOK_SECRET, RuntimeFactory
from tests.support.daytime import daytime_zone
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer

FUTURE = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
AUTH = {SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/fhir+json"}


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    # On the real clock: outside the journey's quiet hours, the booking confirmation is queued
    # at once whatever the hour the tests run at.
    return make_runtime(timezone=daytime_zone())


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return TestClient(create_app())


def _count(rt: Runtime, model: type) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _put(client: TestClient, resource: dict[str, object], headers: dict[str, str] = AUTH,
         ) -> object:
    return client.put(f"/fhir/notify/Appointment/{resource['id']}",
                      content=json.dumps(resource), headers=headers)


def test_without_the_secret_is_401_and_nothing_is_stored(client: TestClient, rt: Runtime) -> None:
    resource = appointment("Patient/p1", FUTURE, aid="a1", version="1")
    for headers in ({"Content-Type": "application/fhir+json"},
                    {SECRET_HEADER: "wrong", "Content-Type": "application/fhir+json"}):
        response = client.put("/fhir/notify/Appointment/a1", content=json.dumps(resource),
                              headers=headers)
        assert response.status_code == 401
        assert response.json()["resourceType"] == "OperationOutcome"
    assert client.post("/fhir/notify", headers={}).status_code == 401
    assert client.delete("/fhir/notify/Appointment/a1").status_code == 401
    assert _count(rt, ResourceChangeRecord) == 0
    assert _count(rt, Enrollment) == 0


def test_malformed_json_is_400_with_an_operation_outcome(client: TestClient, rt: Runtime) -> None:
    response = client.put("/fhir/notify/Appointment/a1", content=b'{"resourceType": "Appo',
                          headers=AUTH)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "not JSON" in outcome["issue"][0]["diagnostics"]
    assert _count(rt, ResourceChangeRecord) == 0


def test_invalid_r4_is_400_naming_the_element(client: TestClient, rt: Runtime) -> None:
    resource = appointment("Patient/p1", FUTURE, aid="a1", version="1")
    resource["colour"] = "blue"
    response = _put(client, resource)
    assert response.status_code == 400  # type: ignore[attr-defined]
    issues = response.json()["issue"]  # type: ignore[attr-defined]
    assert any("Appointment.colour" in i.get("expression", []) for i in issues)

    bad_status = appointment("Patient/p1", FUTURE, aid="a1", status="bogus", version="1")
    response = _put(client, bad_status)
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response.json()["issue"][0]["expression"] == ["Appointment.status"]  # type: ignore[attr-defined]
    assert _count(rt, ResourceChangeRecord) == 0


def test_url_and_body_must_agree(client: TestClient) -> None:
    resource = appointment("Patient/p1", FUTURE, aid="a1", version="1")
    response = client.put("/fhir/notify/Appointment/other", content=json.dumps(resource),
                          headers=AUTH)
    assert response.status_code == 400
    response = client.put("/fhir/notify/Patient/a1", content=json.dumps(resource), headers=AUTH)
    assert response.status_code == 400


def test_same_version_twice_is_one_change_and_one_enrollment(
    client: TestClient, rt: Runtime
) -> None:
    resource = appointment("Patient/p1", FUTURE, aid="a1", version="1")
    first, second = _put(client, resource), _put(client, resource)
    assert first.status_code == second.status_code == 200  # type: ignore[attr-defined]
    assert "processed" in first.json()["issue"][0]["diagnostics"]  # type: ignore[attr-defined]
    assert "duplicate" in second.json()["issue"][0]["diagnostics"]  # type: ignore[attr-defined]
    assert _count(rt, ResourceChangeRecord) == 1
    assert _count(rt, Enrollment) == 1
    assert isinstance(rt.enqueue, CollectingEnqueuer)
    assert len(rt.enqueue.steps) == 1  # the booking confirmation, queued once


def test_delete_cancels_pending_steps(client: TestClient, rt: Runtime) -> None:
    _put(client, appointment("Patient/p1", FUTURE, aid="a1", version="1"))
    response = client.delete("/fhir/notify/Appointment/a1", headers=AUTH)
    assert response.status_code == 200
    again = client.delete("/fhir/notify/Appointment/a1", headers=AUTH)
    assert "duplicate" in again.json()["issue"][0]["diagnostics"]
    with rt.sessions() as session:
        states = set(session.scalars(select(ScheduledStep.state)))
    assert StepState.SCHEDULED not in states and StepState.QUEUED not in states
    assert StepState.CANCELLED in states


def test_healthz_reports_a_current_schema(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "outreach_notifications_total" in client.get("/metrics").text


# -- a notification is a hint: checked against the real EHR --------------------------------------


@pytest.fixture
def ehr_rt(make_runtime: RuntimeFactory, fhir: FhirTestServer) -> Runtime:
    return make_runtime(fhir_base_url=fhir.base_url)


@pytest.fixture
def ehr_client(ehr_rt: Runtime) -> TestClient:
    return TestClient(create_app())


def _diagnostics(response: object) -> str:
    return str(response.json()["issue"][0]["diagnostics"])  # type: ignore[attr-defined]


def test_a_resource_the_ehr_does_not_have_is_ignored(
    ehr_client: TestClient, ehr_rt: Runtime
) -> None:
    forged = appointment("Patient/p1", FUTURE, aid="forged-1", version="1")

    response = _put(ehr_client, forged)

    assert response.status_code == 200  # type: ignore[attr-defined]
    assert "ignored" in _diagnostics(response)
    assert _count(ehr_rt, ResourceChangeRecord) == 0
    assert _count(ehr_rt, Enrollment) == 0
    assert isinstance(ehr_rt.enqueue, CollectingEnqueuer) and ehr_rt.enqueue.steps == []


def test_a_forged_version_of_a_real_resource_is_ignored(
    ehr_client: TestClient, ehr_rt: Runtime
) -> None:
    assert ehr_rt.ehr is not None
    real, _ = ehr_rt.ehr.create(appointment("Patient/p1", FUTURE, status="proposed"))
    forged = {**real, "status": "booked",
              "meta": {"versionId": "forged", "lastUpdated": "2099-01-01T00:00:00Z"}}

    response = _put(ehr_client, forged)

    assert "ignored" in _diagnostics(response)
    assert _count(ehr_rt, Enrollment) == 0


def test_a_stale_payload_is_replaced_by_the_ehrs_current_version(
    ehr_client: TestClient, ehr_rt: Runtime
) -> None:
    assert ehr_rt.ehr is not None
    v1, _ = ehr_rt.ehr.create(appointment("Patient/p1", FUTURE))
    v2 = ehr_rt.ehr.update({**v1, "status": "cancelled"})

    response = _put(ehr_client, v1)  # a delayed retry of the first delivery

    assert v2["meta"]["versionId"] in _diagnostics(response)
    assert "processed" in _diagnostics(response)
    assert _count(ehr_rt, Enrollment) == 0  # it was never booked as far as we acted


def test_a_genuine_notification_is_processed_once_however_often_delivered(
    ehr_client: TestClient, ehr_rt: Runtime, fhir: FhirTestServer
) -> None:
    assert ehr_rt.ehr is not None
    real, _ = ehr_rt.ehr.create(appointment("Patient/p1", FUTURE))

    outcomes = [_diagnostics(_put(ehr_client, real)) for _ in range(5)]

    assert "processed" in outcomes[0] and all("duplicate" in o for o in outcomes[1:])
    assert _count(ehr_rt, ResourceChangeRecord) == 1
    assert _count(ehr_rt, Enrollment) == 1
    fhir.outage(503)  # a known version needs no EHR call at all
    assert "duplicate" in _diagnostics(_put(ehr_client, real))


def test_a_delete_of_a_resource_the_ehr_still_has_is_not_acted_on(
    ehr_client: TestClient, ehr_rt: Runtime
) -> None:
    assert ehr_rt.ehr is not None
    real, _ = ehr_rt.ehr.create(appointment("Patient/p1", FUTURE))
    _put(ehr_client, real)

    response = ehr_client.delete(f"/fhir/notify/Appointment/{real['id']}", headers=AUTH)

    assert "duplicate" in _diagnostics(response)
    with ehr_rt.sessions() as session:
        assert StepState.CANCELLED not in set(session.scalars(select(ScheduledStep.state)))


def test_ehr_down_while_verifying_is_503_with_retry_after(
    ehr_client: TestClient, ehr_rt: Runtime, fhir: FhirTestServer
) -> None:
    assert ehr_rt.ehr is not None
    real, _ = ehr_rt.ehr.create(appointment("Patient/p1", FUTURE))
    fhir.outage(503, retry_after=60)  # longer than the client waits in-line

    response = _put(ehr_client, real)

    assert response.status_code == 503  # type: ignore[attr-defined]
    assert response.headers["Retry-After"] == "60"  # type: ignore[attr-defined]
    assert _count(ehr_rt, ResourceChangeRecord) == 0



def _in_flight_at_once(rt: Runtime, count: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """PUT `count` bookings at once; how many were being ingested together at the most (each
    holds its thread until `count` arrived or a second passed, then is ingested as usual)."""
    ingest, arrived = group_commit.ingest, threading.Condition()
    now = [0, 0]  # in flight, most at once

    def held(rt: Runtime, resource: dict[str, Any], source: str) -> IngestResult:
        with arrived:
            now[0] += 1
            now[1] = max(now)
            arrived.notify_all()
            arrived.wait_for(lambda: now[0] >= count, timeout=1.0)
        try:
            return ingest(rt, resource, source)
        finally:
            with arrived:
                now[0] -= 1

    monkeypatch.setattr(group_commit, "ingest", held)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            async def put(i: int) -> int:
                resource = appointment(f"Patient/b{i}", FUTURE, aid=f"b{i}", version="1")
                response = await client.put(f"/fhir/notify/Appointment/b{i}",
                                            content=json.dumps(resource), headers=AUTH)
                return response.status_code
            return list(await asyncio.gather(*(put(i) for i in range(count))))

    assert asyncio.run(burst()) == [200] * count
    assert _count(rt, Enrollment) == count  # every booking stored, none lost to the wait
    return now[1]


def test_a_burst_beyond_the_apps_shared_threads_is_ingested_together(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rest-hook endpoint has threads of its own (OUTREACH_NOTIFY_THREADS, 128), not the
    40 the rest of the app shares: 60 notifications at once all wait for the same group
    commits, which is what makes its batches big."""
    assert _in_flight_at_once(rt, 60, monkeypatch) == 60


def test_notify_threads_caps_the_notifications_ingested_at_once(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = make_runtime(timezone=daytime_zone(), notify_threads=8)
    assert _in_flight_at_once(rt, 20, monkeypatch) == 8  # the others waited, then went in
