"""Due steps published as the sweeper publishes them reach a real `outreach worker` (prefork,
over Redis) in chunks: one task, and one EHR search, per OUTREACH_SEND_BATCH_SIZE steps; every
step sent once and every write-back done."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from outreach.broker.app import celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer, CollectingEnqueuer
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import ScheduledStep, StepState, Writeback
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_NOW
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer
from tests.support.worker_process import WorkerProcess

BOOKINGS, BATCH = 7, 3


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _done(rt: Runtime) -> bool:
    with rt.sessions() as session:
        sent = session.scalar(select(func.count(ScheduledStep.id)).where(
            ScheduledStep.state == StepState.SENT))
        pending = session.scalar(select(func.count(Writeback.id)).where(
            Writeback.state == "pending"))
    return sent == BOOKINGS and pending == 0


def test_due_steps_reach_the_worker_in_chunks_each_one_ehr_search(
    make_runtime: RuntimeFactory, pg_url: str, fhir: FhirTestServer, twilio: TwilioServer,
    redis_url: str, tmp_path: Path,
) -> None:
    (tmp_path / "sms-now.yaml").write_text(SMS_NOW)
    env = {
        "OUTREACH_DATABASE_URL": pg_url, "OUTREACH_BROKER_URL": redis_url,
        "OUTREACH_FHIR_BASE_URL": fhir.base_url, "OUTREACH_RULES_DIR": str(tmp_path),
        "OUTREACH_TWILIO_ACCOUNT_SID": ACCOUNT_SID, "OUTREACH_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "OUTREACH_TWILIO_FROM": "+15555550100", "OUTREACH_TWILIO_BASE_URL": twilio.base_url,
        "OUTREACH_SMS_RATE_PER_SECOND": "1000", "OUTREACH_WEBHOOK_SECRET": "s" * 20,
        "OUTREACH_SEND_BATCH_SIZE": str(BATCH),
    }
    settings = {k.removeprefix("OUTREACH_").lower(): v for k, v in env.items()}
    queue = CollectingEnqueuer()  # the bookings' steps wait, queued, as a sweep leaves them
    rt = make_runtime(enqueue=queue, **settings)
    configure(celery_app, rt.settings)
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=3)
    for i in range(BOOKINGS):
        pat, _ = rt.ehr.create(patient(email=None, mobile=f"+1555777{i:04d}"))
        ingest(rt, rt.ehr.create(appointment(f"Patient/{pat['id']}", start))[0], source="test")
    assert len(queue.steps) == BOOKINGS
    fhir.clear_requests()

    env["OUTREACH_TEST_WORKER_LOG"] = str(tmp_path / "worker.log")
    with WorkerProcess(env, concurrency=2, queues="sends,writeback"):
        CeleryEnqueuer(celery_app, rt.settings.send_batch_size).send_steps(queue.steps)
        _wait(lambda: _done(rt), timeout=120)

    searches = [r for r in fhir.requests() if r["method"] == "GET" and r["path"] != "/metadata"]
    assert len(searches) == 3  # 7 steps in chunks of 3: one search each
    assert sorted(Counter(m["to"] for m in twilio.messages).values()) == [1] * BOOKINGS
