"""Faults ingestion must survive, on real parts (FHIR test server, our API under uvicorn,
Postgres): redelivery and reordering, the receiver down past the EHR's retry window, meta-only
updates. (EHR outages during a poll: test_polling.py; forged notifications: api/test_notify.py.)"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connector import subscriptions
from connector.subscriptions import SECRET_HEADER
from outreach.core.ports import Runtime
from outreach.intake.polling import poll_once
from outreach.store.models import Enrollment, ResourceChangeRecord
from tests.conftest import WEBHOOK_SECRET, ApiServer, RuntimeFactory
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer, fhir_server_session
from tests.support.smtp import free_port

START = datetime.now(UTC) + timedelta(days=5)


def processed(rt: Runtime) -> list[ResourceChangeRecord]:
    with rt.sessions() as session:
        return list(session.scalars(select(ResourceChangeRecord).where(
            ResourceChangeRecord.outcome == "processed").order_by(ResourceChangeRecord.id)))


def versions(fhir_rt: Runtime, n: int) -> list[dict[str, Any]]:
    """One Appointment with n versions in the EHR: booked, then moved a day at a time."""
    assert fhir_rt.ehr is not None
    current, _ = fhir_rt.ehr.create(appointment("Patient/p1", START))
    found = [current]
    for day in range(1, n):
        # Versions in the same millisecond share meta.lastUpdated, and opaque versionIds cannot
        # order them: a trusted payload then cannot tell which is newer (verification can). An
        # EHR's edits are never that close; keep the test's apart too.
        time.sleep(0.005)
        moved = appointment("Patient/p1", START + timedelta(days=day))
        current = fhir_rt.ehr.update({**moved, "id": current["id"]})
        found.append(current)
    return found


@pytest.mark.parametrize("verify", [False, True], ids=["trusted-payload", "verified"])
def test_five_deliveries_of_each_version_out_of_order_process_each_version_once_in_order(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, api_server: ApiServer, verify: bool
) -> None:
    rt = make_runtime(fhir_base_url=fhir.base_url, verify_notifications=verify)
    history = versions(rt, 3)
    deliveries = [v for v in history for _ in range(5)]
    random.Random(3).shuffle(deliveries)
    url = f"{api_server.url}/fhir/notify/Appointment/{history[0]['id']}"
    headers = {SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/fhir+json"}

    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(
            lambda v: client.put(url, content=json.dumps(v), headers=headers).status_code,
            deliveries))

    assert set(statuses) == {200}
    done = processed(rt)
    ids = [r.version_id for r in done]
    assert len(ids) == len(set(ids))  # no version twice
    stamps = [r.last_updated for r in done]
    assert stamps == sorted(stamps)  # never an older version after a newer one
    assert ids[-1] == history[-1]["meta"]["versionId"]  # and the newest always ends up applied
    with rt.sessions() as session:
        (enrollment,) = session.scalars(select(Enrollment))
    assert enrollment.anchor_at == datetime.fromisoformat(
        history[-1]["start"].replace("Z", "+00:00"))


def test_a_meta_only_update_reaches_no_journey(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    from outreach.intake.ingest import ingest

    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    first, _ = rt.ehr.create(appointment("Patient/p1", START))
    assert ingest(rt, first, "test").outcome == "processed"
    touched = rt.ehr.update({**first, "meta": {"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}]}})
    assert touched["meta"]["versionId"] != first["meta"]["versionId"]

    result = ingest(rt, touched, "test")

    assert result.outcome == "unchanged" and result.journeys == []
    with rt.sessions() as session:
        records = {r.version_id: r.outcome for r in session.scalars(select(ResourceChangeRecord))}
    assert records[touched["meta"]["versionId"]] == "meta-only"


@pytest.fixture(scope="module")
def short_window_server() -> Iterator[FhirTestServer]:
    # HAPI retries for about a minute; the same behaviour, scaled down so the test is quick.
    yield from fhir_server_session(env={"RESTHOOK_RETRY_SECONDS": "1",
                                        "RESTHOOK_RETRY_INTERVAL_MS": "200"})


def test_receiver_down_past_the_retry_window_then_the_reconciler_picks_everything_up(
    make_runtime: RuntimeFactory, short_window_server: FhirTestServer
) -> None:
    fhir = short_window_server
    fhir.reset()
    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    down = f"http://127.0.0.1:{free_port()}/fhir/notify"  # nothing listens: our API is down
    subscriptions.ensure(rt.ehr, ["Appointment"], down, WEBHOOK_SECRET)
    booked = [rt.ehr.create(appointment(f"Patient/p{i}", START))[0] for i in range(5)]
    rt.ehr.update({**booked[0], "status": "cancelled"})

    def gave_up(found: list[dict[str, Any]]) -> bool:
        return len(found) >= 6 * 5 and all("error" in d for d in found)

    fhir.wait_for_deliveries(gave_up, timeout=15)
    assert processed(rt) == []  # every delivery failed and the emitter has given up

    assert poll_once(rt) == {"Appointment": 5, "Task": 0}
    got = {(r.resource_id, r.source) for r in processed(rt)}
    assert got == {(a["id"], "poll") for a in booked}
    with rt.sessions() as session:
        states = {e.resource_id: e.state for e in session.scalars(select(Enrollment))}
    assert booked[0]["id"] not in states  # seen first as cancelled: nobody is messaged
    assert len(states) == 4
