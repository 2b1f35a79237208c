"""Topic-based subscriptions end to end: the test server's Backport IG emitter → our API →
ingest; gaps and missed heartbeats recovered with `$events` (or a reconcile poll)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from connector.subscriptions import desired_topic
from outreach.broker.app import celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.topics import check_silence
from outreach.store.models import ResourceChangeRecord, SubscriptionStatus
from tests.conftest import WEBHOOK_SECRET, ApiServer, RuntimeFactory, wait_until
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer

TOPIC = "http://example.org/fhir/SubscriptionTopic/appointment-changed"
START = datetime.now(UTC) + timedelta(days=5)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, api_server: ApiServer
       ) -> Iterator[Runtime]:
    # In-process Celery (no broker): a reconcile poll, enqueued by name, runs right away.
    rt = make_runtime(fhir_base_url=fhir.base_url, public_url=api_server.url,
                      enqueue=CeleryEnqueuer(celery_app))
    configure(celery_app, rt.settings)
    yield rt


def subscribe(rt: Runtime, content: str) -> str:
    assert rt.ehr is not None and rt.settings.notify_endpoint is not None
    sub, _ = rt.ehr.create(desired_topic(TOPIC, "Appointment", rt.settings.notify_endpoint,
                                          WEBHOOK_SECRET, content=content))
    assert wait_until(lambda: status(rt, sub["id"]) is not None), "no handshake"
    return str(sub["id"])


def status(rt: Runtime, sub_id: str) -> SubscriptionStatus | None:
    with rt.sessions() as session:
        return session.get(SubscriptionStatus, sub_id)


def processed(rt: Runtime) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count()).select_from(ResourceChangeRecord).where(
            ResourceChangeRecord.outcome == "processed")) or 0


def book(rt: Runtime, n: int = 1) -> list[dict[str, Any]]:
    assert rt.ehr is not None
    return [rt.ehr.create(appointment(f"Patient/p{i}", START))[0] for i in range(n)]


@pytest.mark.parametrize("content", ["id-only", "full-resource"])
def test_events_are_ingested_and_counted(rt: Runtime, content: str) -> None:
    sub_id = subscribe(rt, content)
    handshake = status(rt, sub_id)
    assert handshake is not None and (handshake.kind, handshake.topic) == ("topic", TOPIC)

    book(rt, 3)

    assert wait_until(lambda: processed(rt) == 3)
    row = status(rt, sub_id)
    assert row is not None and row.events_since_start == 3 and row.gap_detected_at is None


def test_a_gap_is_recovered_with_events(rt: Runtime, fhir: FhirTestServer) -> None:
    sub_id = subscribe(rt, "id-only")
    fhir.drop_topic_events(2)
    book(rt, 3)  # events 1 and 2 are lost; 3 arrives and shows the gap

    assert wait_until(lambda: processed(rt) == 3)
    row = status(rt, sub_id)
    assert row is not None and row.gap_detected_at is not None
    with rt.sessions() as session:
        sources = set(session.scalars(select(ResourceChangeRecord.source)))
    assert sources == {"topic"}  # recovered through $events, not a poll


def test_a_heartbeat_that_reveals_lost_events_triggers_recovery(
    rt: Runtime, fhir: FhirTestServer
) -> None:
    sub_id = subscribe(rt, "full-resource")
    fhir.drop_topic_events(2)
    book(rt, 2)
    assert fhir.heartbeat() == 1

    assert wait_until(lambda: processed(rt) == 2)
    row = status(rt, sub_id)
    assert row is not None and row.last_heartbeat_at is not None
    assert row.gap_detected_at is not None and row.events_since_start == 2


def test_an_empty_event_triggers_a_reconcile_poll(rt: Runtime) -> None:
    subscribe(rt, "empty")
    book(rt, 1)

    assert wait_until(lambda: processed(rt) == 1)
    with rt.sessions() as session:
        assert session.scalars(select(ResourceChangeRecord.source)).one() == "poll"


def test_a_missed_heartbeat_is_noticed_and_recovered(
    rt: Runtime, fhir: FhirTestServer
) -> None:
    sub_id = subscribe(rt, "id-only")
    fhir.drop_topic_events(1)
    book(rt, 1)
    assert check_silence(rt) == []  # just heard from it (the handshake)

    rt.clock = SimulatedClock(datetime.now(UTC) + timedelta(hours=1))
    assert check_silence(rt) == [sub_id]
    assert processed(rt) == 1
    assert check_silence(rt) == []  # one recovery per silence, not one per check
