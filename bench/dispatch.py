"""Dispatch throughput: due steps → send_step (re-check in the EHR, Twilio send, records) →
Communication written back to the FHIR server, with N concurrent workers (threads).

Baseline, same parts and concurrency: per message, the bare calls the product path is built
on — read the Appointment and the Patient, POST to the Twilio-shaped API, create the
Communication and its CommunicationRequest in the FHIR server, insert one row into the same
Postgres."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import text

from bench.result import Result
from connector.client import FhirClient
from connector.writeback import (
    PlannedMessage,
    SentMessage,
    build_communication,
    build_communication_request,
)
from outreach import runtime
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.intake.ingest import ingest
from outreach.runtime import build_runtime
from outreach.worker import jobs
from tests.support.database import temporary_database
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

JOURNEY = """
journey: bench-sms
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: start
steps:
  - {id: booked, at: immediately, channel: [sms], template: appointment-booked}
"""


@contextmanager
def _stack(tmp: Any) -> Iterator[tuple[Runtime, TwilioServer]]:
    with ExitStack() as stack:
        fhir = stack.enter_context(FhirTestServer())
        twilio = stack.enter_context(TwilioServer())
        db_url = stack.enter_context(temporary_database())
        (tmp / "bench.yaml").write_text(JOURNEY)
        settings = load_settings(
            database_url=db_url, fhir_base_url=fhir.base_url, rules_dir=tmp,
            twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
            twilio_from="+15555550100", twilio_base_url=twilio.base_url,
            sms_rate_per_second=100_000,
        )
        rt = build_runtime(settings, enqueue=CollectingEnqueuer())
        runtime.install(rt)
        stack.callback(runtime.install, None)
        yield rt, twilio


def _book(rt: Runtime, count: int) -> list[tuple[str, str]]:
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=5)
    refs = []
    for i in range(count):
        pat, _ = rt.ehr.create(patient(email=None, mobile=f"+1555{i:07d}"))
        appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", start))
        ingest(rt, appt, source="bench")
        refs.append((pat["id"], appt["id"]))
    return refs


def _timed(work: Sequence[Callable[[], object]], workers: int) -> float:
    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(job) for job in work]:
            future.result()
    return time.perf_counter() - began


def _product(rt: Runtime, workers: int) -> tuple[float, int]:
    queue = rt.enqueue
    assert isinstance(queue, CollectingEnqueuer)
    steps, queue.steps = queue.steps, []

    def one(step_id: int) -> None:
        outcome = jobs.send_step(rt, step_id)
        assert outcome.state == "sent" and outcome.writeback_ids, outcome
        # the write-back tasks the worker runs next: the Communication and its request
        for writeback_id in outcome.writeback_ids:
            assert jobs.write_back(rt, writeback_id) == "done"

    return _timed([partial(one, s) for s in steps], workers), len(steps)


def _baseline(rt: Runtime, twilio: TwilioServer, refs: list[tuple[str, str]],
              workers: int) -> float:
    assert rt.ehr is not None
    fhir = FhirClient(str(rt.settings.fhir_base_url))
    http = httpx.Client(base_url=twilio.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN))
    url = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"

    def one(index: int, pid: str, aid: str) -> None:
        fhir.read("Appointment", aid)
        fhir.read("Patient", pid)
        http.post(url, data={"To": f"+1666{index:07d}", "From": "+15555550100",
                             "Body": "baseline"}).raise_for_status()
        now = datetime.now(UTC)
        fhir.create(build_communication(SentMessage(
            identifier_system="urn:bench", identifier_value=f"b{index}",
            patient=f"Patient/{pid}", about=f"Appointment/{aid}", channel="sms",
            category="reminder", sent=now, text="baseline")))
        fhir.create(build_communication_request(PlannedMessage(
            identifier_system="urn:bench", step_uid=f"b{index}", status="completed",
            patient=f"Patient/{pid}", about=f"Appointment/{aid}", channels=("sms",),
            category="reminder", due=now, authored=now, description="baseline")))
        with rt.engine.begin() as conn:
            conn.execute(text("INSERT INTO poll_cursors VALUES (:t, now(), now())"),
                         {"t": f"bench-{index}"})

    work = [partial(one, i, p, a) for i, (p, a) in enumerate(refs)]
    try:
        return _timed(work, workers)
    finally:
        fhir.close()
        http.close()


def run(iterations: int = 300, workers: int = 8) -> list[Result]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp, _stack(Path(tmp)) as (rt, twilio):
        refs = _book(rt, iterations)
        product_seconds, sent = _product(rt, workers)
        baseline_seconds = _baseline(rt, twilio, refs, workers)
    note = f"{sent} sends, {workers} threads, Twilio-shaped API + FHIR server + Postgres"
    return [Result("dispatch_sends_per_s", sent / product_seconds, "sends/s",
                   len(refs) / baseline_seconds, note)]
