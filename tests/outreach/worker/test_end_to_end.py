"""The spine on real parts: a booking in the FHIR server becomes one email and one Communication.

FHIR server (Medplum, rest-hook emitter) → our API (uvicorn) → Postgres → Celery over Redis
(in-process worker) → SMTP (aiosmtpd) → Communication written back to the FHIR server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from celery.contrib.testing.worker import start_worker

from connector import subscriptions
from connector.client import FhirClient
from outreach.broker.app import celery_app, configure
from tests.conftest import ApiServer, RuntimeFactory, wait_until
from tests.support.daytime import daytime_zone
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer


@pytest.fixture
def live(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer, redis_url: str,
    api_server: ApiServer,
) -> Iterator[FhirClient]:
    from outreach.broker.enqueue import CeleryEnqueuer

    rt = make_runtime(
        # The booking confirmation must go at once whatever the hour the tests run at: outside
        # the journey's quiet hours (21:00-08:00 local).
        timezone=daytime_zone(),
        enqueue=CeleryEnqueuer(celery_app), fhir_base_url=fhir.base_url, broker_url=redis_url,
        public_url=api_server.url, smtp_host="127.0.0.1", smtp_port=smtp.port,
        smtp_from="reminders@hospital.example",
    )
    configure(celery_app, rt.settings)
    assert rt.ehr is not None and rt.settings.webhook_secret is not None
    states = subscriptions.ensure(rt.ehr, ["Appointment"], f"{api_server.url}/fhir/notify",
                                  rt.settings.webhook_secret.get_secret_value())
    assert [s.status for s in states] == ["active"]
    with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False,
                      shutdown_timeout=10):
        yield rt.ehr


def test_booking_five_days_out_sends_one_confirmation_and_writes_one_communication(
    live: FhirClient, smtp: SmtpServer
) -> None:
    pat, _ = live.create(patient(email="ana@example.org", given="Ana"))
    start = datetime.now(UTC).replace(hour=14, minute=0, second=0, microsecond=0)
    start += timedelta(days=5)
    appt, _ = live.create(appointment(f"Patient/{pat['id']}", start))

    messages = smtp.wait_for(1, timeout=15)
    assert len(messages) == 1
    mail = messages[0]
    assert mail["To"] == "ana@example.org"
    assert "booked" in mail["Subject"]
    assert mail.is_multipart()

    def communications() -> list[dict[str, object]]:
        found = list(live.search("Communication", {"subject": f"Patient/{pat['id']}"}))
        return [c for c in found if {"reference": f"Appointment/{appt['id']}"} in c["about"]]

    written = wait_until(communications, timeout=15)
    assert len(written) == 1
    communication = written[0]
    assert communication["status"] == "completed"
    assert communication["medium"][0]["coding"][0]["code"] == "EMAILWRIT"
    assert communication["category"][0]["coding"][0]["code"] == "notification"
    assert "Ana" in communication["payload"][0]["contentString"]

    # Nothing more arrives: the rest-hook, the sweeper's re-queue and the write-back retry
    # paths must not duplicate the message or the Communication.
    wait_until(lambda: len(smtp.messages) > 1, timeout=2)
    assert len(smtp.messages) == 1
    assert len(communications()) == 1
