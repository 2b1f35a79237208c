"""Booking → confirmation sent: from the Appointment's create in the FHIR server to the email at
the SMTP server, through the rest-hook, the API, Postgres, Celery on Redis and the SMTP channel.

Baseline, per iteration and on the same parts: the FHIR create alone, a no-op Celery task round
trip on the same Redis and worker, and one SMTP send of a same-sized email: the floor the
product path stacks its own work on."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from celery.contrib.testing.worker import start_worker

from bench.result import Result, percentile
from connector import subscriptions
from connector.client import FhirClient
from outreach import runtime
from outreach.broker.app import celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer
from outreach.core.settings import load_settings
from outreach.runtime import build_runtime
from tests.support.api_server import ApiServer
from tests.support.database import temporary_database
from tests.support.daytime import daytime_zone
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer

SECRET = "bench-secret-0123456789"
_done = threading.Event()


@celery_app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    _done.set()


@contextmanager
def _stack(redis_url: str) -> Iterator[tuple[FhirClient, SmtpServer, FhirTestServer]]:
    with ExitStack() as stack:
        fhir_server = stack.enter_context(FhirTestServer())
        smtp = SmtpServer()
        smtp.start()
        stack.callback(smtp.stop)
        db_url = stack.enter_context(temporary_database())
        api = ApiServer()
        api.start()
        stack.callback(api.stop)
        settings = load_settings(
            database_url=db_url, broker_url=redis_url, fhir_base_url=fhir_server.base_url,
            public_url=api.url, webhook_secret=SECRET, smtp_host="127.0.0.1",
            smtp_port=smtp.port, smtp_from="bench@hospital.example",
            timezone=daytime_zone(),  # the confirmation goes at once, whatever the hour
        )
        rt = build_runtime(settings, enqueue=CeleryEnqueuer(celery_app))
        runtime.install(rt)
        stack.callback(runtime.install, None)
        configure(celery_app, settings)
        assert rt.ehr is not None
        subscriptions.ensure(rt.ehr, ["Appointment"], f"{api.url}/fhir/notify", SECRET)
        stack.enter_context(start_worker(celery_app, pool="threads", concurrency=2,
                                         perform_ping_check=False, shutdown_timeout=10))
        client = stack.enter_context(FhirClient(fhir_server.base_url))
        yield client, smtp, fhir_server


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not complete")
        time.sleep(0.0005)


def _baseline_once(fhir: FhirClient, smtp: SmtpServer, patient_ref: str, start: datetime) -> float:
    began = time.perf_counter()
    fhir.create({**appointment(patient_ref, start), "status": "proposed"})
    _done.clear()
    noop.delay()
    _wait(_done.is_set)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "bench@hospital.example", "x@example.org", "x"
    mail.set_content("x" * 300)
    with smtplib.SMTP("127.0.0.1", smtp.port) as client:
        client.send_message(mail)
    return time.perf_counter() - began


def run(iterations: int = 100, redis_url: str = "redis://127.0.0.1:6379/14") -> list[Result]:
    latencies, floors = [], []
    with _stack(redis_url) as (fhir, smtp, _server):
        pat, _ = fhir.create(patient(email="bench@example.org"))
        start = datetime.now(UTC) + timedelta(days=5)
        ref = f"Patient/{pat['id']}"
        for i in range(iterations + 5):
            expected = len(smtp.messages) + 1
            began = time.perf_counter()
            fhir.create(appointment(ref, start + timedelta(minutes=i)))
            _wait(lambda expected=expected: len(smtp.messages) >= expected)
            elapsed = time.perf_counter() - began
            floor = _baseline_once(fhir, smtp, ref, start)
            if i >= 5:  # warm-up: imports, connection pools, JIT-less first paths
                latencies.append(elapsed)
                floors.append(floor)
    ms = 1000.0
    note = f"{iterations} bookings, sequential"
    return [
        Result("booking_to_confirmation_p50", percentile(latencies, 50) * ms, "ms",
               percentile(floors, 50) * ms, note),
        Result("booking_to_confirmation_p99", percentile(latencies, 99) * ms, "ms",
               percentile(floors, 99) * ms, note),
    ]
