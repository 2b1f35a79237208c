"""Sends and write-backs on their own Celery queues: an EHR slow to take writes never holds up
a send. Real `outreach worker` processes (prefork) over Redis, one per queue, as the operations
guide says to run them under load; the FHIR server holds every write for seconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from outreach.broker.app import celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer
from outreach.cli import app
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import Writeback
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_NOW
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer
from tests.support.worker_process import WorkerProcess

PATIENTS = 4
WRITE_DELAY_S = 3.0


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    (tmp_path / "sms-now.yaml").write_text(SMS_NOW)
    return tmp_path


def _pending_writebacks(rt: Runtime) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count(Writeback.id)).where(
            Writeback.state == "pending")) or 0


def _wait(condition: object, timeout: float) -> float:
    """Seconds until `condition()` held; fails the test past `timeout`."""
    began = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - began


def test_a_slow_ehr_write_path_does_not_delay_sends(
    make_runtime: RuntimeFactory, pg_url: str, fhir: FhirTestServer, twilio: TwilioServer,
    redis_url: str, rules: Path, tmp_path: Path,
) -> None:
    env = {
        "OUTREACH_DATABASE_URL": pg_url, "OUTREACH_BROKER_URL": redis_url,
        "OUTREACH_FHIR_BASE_URL": fhir.base_url, "OUTREACH_RULES_DIR": str(rules),
        "OUTREACH_TWILIO_ACCOUNT_SID": ACCOUNT_SID, "OUTREACH_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "OUTREACH_TWILIO_FROM": "+15555550100", "OUTREACH_TWILIO_BASE_URL": twilio.base_url,
        "OUTREACH_SMS_RATE_PER_SECOND": "1000", "OUTREACH_WEBHOOK_SECRET": "s" * 20,
        "OUTREACH_TEST_WORKER_LOG": str(tmp_path / "worker.log"),
    }
    rt = make_runtime(enqueue=CeleryEnqueuer(celery_app),
                      **{k.removeprefix("OUTREACH_").lower(): v for k, v in env.items()
                         if k != "OUTREACH_TEST_WORKER_LOG"})
    configure(celery_app, rt.settings)
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=3)
    appointments = []
    for i in range(2 * PATIENTS):
        pat, _ = rt.ehr.create(patient(email=None, mobile=f"+1555666{i:04d}"))
        appointments.append(rt.ehr.create(appointment(f"Patient/{pat['id']}", start))[0])
    first, second = appointments[:PATIENTS], appointments[PATIENTS:]
    fhir.features(write_delay_ms=int(WRITE_DELAY_S * 1000))
    for appt in first:
        ingest(rt, appt, source="test")

    with WorkerProcess(env, concurrency=1, queues="sends"), \
            WorkerProcess(env, concurrency=1, queues="writeback,celery"):
        _wait(lambda: len(twilio.messages) >= PATIENTS, timeout=60)
        # The first bookings' write-backs now crawl into the EHR, seconds each: on one queue,
        # every worker process would be held by them and the next bookings' sends would wait.
        for appt in second:
            ingest(rt, appt, source="test")
        took = _wait(lambda: len(twilio.messages) >= 2 * PATIENTS, timeout=60)
        assert took < WRITE_DELAY_S, took
        assert _pending_writebacks(rt) > 2 * PATIENTS  # the EHR has taken few of them yet
        fhir.features()  # the EHR is quick again: everything is written, nothing twice
        _wait(lambda: _pending_writebacks(rt) == 0, timeout=120)
    assert len(twilio.messages) == 2 * PATIENTS
    assert len(list(rt.ehr.search("Communication", {"_count": 50}))) == 2 * PATIENTS
    requests = list(rt.ehr.search("CommunicationRequest", {"_count": 50}))
    assert sorted(r["status"] for r in requests) == ["completed"] * 2 * PATIENTS


def test_a_worker_asked_for_an_unknown_queue_says_which_queues_there_are() -> None:
    result = CliRunner().invoke(app, ["worker", "--queues", "sends,sms"])
    assert result.exit_code == 2
    assert "sms" in result.output and "sends, writeback, celery" in result.output
