"""Exactly-once in effect under the faults hospitals fear: a worker killed mid-burst, the broker
restarted mid-dispatch. Real Celery workers (subprocesses), Redis, Postgres, the FHIR server,
and a Twilio-shaped API server counting every message it accepts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from outreach.broker.app import celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import ScheduledStep, StepState
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_NOW
from tests.support.smtp import free_port
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer
from tests.support.worker_process import RedisProcess, WorkerProcess

BURST = 24


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        server.state.latency = 0.15  # widen the window between the provider call and the record
        yield server


# Leases far shorter than production's (300 s) keep the test quick; they must still be longer
# than one send takes on a loaded machine, or a slow send would be taken up twice.
def _settings(pg_url: str, fhir: FhirTestServer, twilio: TwilioServer, broker: str,
              rules: Path) -> dict[str, str]:
    return {
        "OUTREACH_DATABASE_URL": pg_url, "OUTREACH_BROKER_URL": broker,
        "OUTREACH_FHIR_BASE_URL": fhir.base_url, "OUTREACH_RULES_DIR": str(rules),
        "OUTREACH_TWILIO_ACCOUNT_SID": ACCOUNT_SID, "OUTREACH_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "OUTREACH_TWILIO_FROM": "+15555550100", "OUTREACH_TWILIO_BASE_URL": twilio.base_url,
        "OUTREACH_SMS_RATE_PER_SECOND": "1000", "OUTREACH_SEND_LEASE_SECONDS": "5",
        "OUTREACH_REQUEUE_AFTER_SECONDS": "5", "OUTREACH_WEBHOOK_SECRET": "s" * 20,
    }


def _runtime(make_runtime: RuntimeFactory, env: dict[str, str]) -> Runtime:
    overrides = {k.removeprefix("OUTREACH_").lower(): v for k, v in env.items()}
    rt = make_runtime(enqueue=CeleryEnqueuer(celery_app), **overrides)
    configure(celery_app, rt.settings)
    return rt


def _book_burst(rt: Runtime) -> None:
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=3)
    for i in range(BURST):
        pat, _ = rt.ehr.create(patient(email=None, mobile=f"+1555555{i:04d}"))
        appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", start))
        ingest(rt, appt, source="test")  # enqueues send_step(id) on the broker


def _sent(rt: Runtime) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count(ScheduledStep.id)).where(
            ScheduledStep.state == StepState.SENT)) or 0


def _sweep_until_all_sent(rt: Runtime, timeout: float = 180) -> None:
    """Play beat: sweep every half second until every step is sent."""
    deadline = time.monotonic() + timeout
    while _sent(rt) < BURST and time.monotonic() < deadline:
        jobs.sweep(rt)
        time.sleep(0.5)


def _wait_for_requests(twilio: TwilioServer, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(twilio.state.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def _unsent(rt: Runtime) -> list[tuple[str, str | None, int]]:
    with rt.sessions() as session:
        return [(s.state, s.reason, s.attempts) for s in session.scalars(
            select(ScheduledStep).where(ScheduledStep.state != StepState.SENT))]


def _assert_each_patient_texted_once(rt: Runtime, twilio: TwilioServer) -> None:
    assert _sent(rt) == BURST, _unsent(rt)
    per_number = Counter(m["to"] for m in twilio.messages)
    assert len(per_number) == BURST
    assert set(per_number.values()) == {1}, per_number


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    (tmp_path / "sms-now.yaml").write_text(SMS_NOW)
    return tmp_path


def test_worker_killed_mid_burst_sends_each_step_exactly_once(
    make_runtime: RuntimeFactory, pg_url: str, fhir: FhirTestServer, twilio: TwilioServer,
    redis_url: str, rules: Path, tmp_path: Path,
) -> None:
    env = _settings(pg_url, fhir, twilio, redis_url, rules)
    env["OUTREACH_TEST_WORKER_LOG"] = str(tmp_path / "worker.log")
    rt = _runtime(make_runtime, env)
    _book_burst(rt)
    worker = WorkerProcess(env)
    worker.start()
    _wait_for_requests(twilio, BURST // 3)
    worker.kill()  # SIGKILL mid-burst: some steps are `sending`, some tasks unacked
    assert _sent(rt) < BURST
    with WorkerProcess(env):
        _sweep_until_all_sent(rt)
    _assert_each_patient_texted_once(rt, twilio)


def test_redis_restarted_during_dispatch_loses_nothing_and_sends_nothing_twice(
    make_runtime: RuntimeFactory, pg_url: str, fhir: FhirTestServer, twilio: TwilioServer,
    rules: Path, tmp_path: Path,
) -> None:
    broker = RedisProcess(free_port())
    broker.start()
    env = _settings(pg_url, fhir, twilio, broker.url, rules)
    env["OUTREACH_TEST_WORKER_LOG"] = str(tmp_path / "worker.log")
    rt = _runtime(make_runtime, env)
    try:
        _book_burst(rt)
        with WorkerProcess(env):
            _wait_for_requests(twilio, BURST // 3)
            broker.kill()  # every queued task message is gone with it
            time.sleep(1)
            broker.start()
            _sweep_until_all_sent(rt)
        _assert_each_patient_texted_once(rt, twilio)
    finally:
        broker.kill()
        # Back to in-process, as at import: the killed broker's connections are dropped.
        configure(celery_app, rt.settings.model_copy(update={"broker_url": None}))
