"""Due steps sent in chunks: the chunk's send-time re-check is one EHR search, a step whose
appointment was cancelled is not sent while the others are, the chunk's write-backs are handed
over at once, and a chunk task run again after its worker died sends nothing twice. Real
Postgres, the FHIR test server, an SMTP server and a Twilio-shaped API server."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from channels import OutboundMessage, SendReceipt
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.worker import jobs
from tests.conftest import RuntimeFactory
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_NOW
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
CHUNK = 5


@dataclass
class _Recording(CollectingEnqueuer):
    """A CollectingEnqueuer that also keeps each write-back hand-over as it was made."""

    handovers: list[list[int]] = field(default_factory=list)

    def write_back(self, writeback_ids: list[int]) -> None:
        self.handovers.append(list(writeback_ids))
        super().write_back(writeback_ids)


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


Emailing = Callable[..., Runtime]


@pytest.fixture
def emailing(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer,
             clock: SimulatedClock) -> Emailing:
    """A runtime sending by e-mail to the SMTP server, against the FHIR test server, with the
    settings given on top."""
    def made(**overrides: Any) -> Runtime:
        return make_runtime(clock=clock, enqueue=_Recording(), fhir_base_url=fhir.base_url,
                            smtp_host="127.0.0.1", smtp_port=smtp.port,
                            smtp_from="reminders@hospital.example", **overrides)
    return made


@pytest.fixture
def rt(emailing: Emailing) -> Runtime:
    return emailing()


def _queue(rt: Runtime) -> _Recording:
    assert isinstance(rt.enqueue, _Recording)
    return rt.enqueue


def _book(rt: Runtime, count: int, **contact: Any) -> list[tuple[dict[str, Any], int]]:
    """`count` bookings ingested, their planned CommunicationRequests written; each
    appointment with its confirmation step, queued and not yet sent."""
    assert rt.ehr is not None
    queue = _queue(rt)
    booked = []
    for i in range(count):
        reach = {key: value.format(i) for key, value in contact.items()} or \
            {"email": f"pat{i}@example.org"}
        pat, _ = rt.ehr.create(patient(**reach))
        appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5)))
        ingest(rt, appt, source="test")
        (step_id,) = queue.steps
        queue.steps.clear()
        booked.append((appt, step_id))
    for row in queue.writebacks:
        assert jobs.write_back(rt, row) == "done"
    queue.writebacks.clear()
    queue.handovers.clear()
    return booked


def _searches(fhir: FhirTestServer) -> list[str]:
    return [f"GET {r['path']}" for r in fhir.requests()
            if r["method"] == "GET" and r["path"] != "/metadata"]


def _states(rt: Runtime, step_ids: list[int]) -> list[str]:
    with rt.sessions() as session:
        found = {step.id: step.state for step in session.scalars(
            select(ScheduledStep).where(ScheduledStep.id.in_(step_ids)))}
    return [found[step_id] for step_id in step_ids]


def test_a_chunk_costs_the_ehr_one_search_and_one_write_back_handover(
    rt: Runtime, fhir: FhirTestServer, smtp: SmtpServer,
) -> None:
    booked = _book(rt, CHUNK)
    step_ids = [step_id for _, step_id in booked]
    fhir.clear_requests()

    outcomes = jobs.send_steps(rt, step_ids)

    assert [o.state for o in outcomes] == [StepState.SENT] * CHUNK
    assert _searches(fhir) == ["GET /Appointment"]  # one search re-checked all five
    assert len(smtp.messages) == CHUNK
    (handover,) = _queue(rt).handovers  # every Communication of the chunk, in one call
    assert sorted(handover) == sorted(o.writeback_ids[0] for o in outcomes)
    drain(rt)
    assert rt.ehr is not None
    written = {c["about"][0]["reference"] for c in rt.ehr.search("Communication", {"_count": 50})}
    assert written == {f"Appointment/{appt['id']}" for appt, _ in booked}


def test_a_step_cancelled_in_the_ehr_is_not_sent_while_the_others_are(
    rt: Runtime, fhir: FhirTestServer, smtp: SmtpServer,
) -> None:
    booked = _book(rt, 3)
    cancelled, cancelled_step = booked[1]
    assert rt.ehr is not None
    rt.ehr.update({**rt.ehr.read("Appointment", str(cancelled["id"])), "status": "cancelled"})
    fhir.clear_requests()

    outcomes = jobs.send_steps(rt, [step_id for _, step_id in booked])

    assert [o.state for o in outcomes] == [StepState.SENT, StepState.CANCELLED, StepState.SENT]
    assert _searches(fhir) == ["GET /Appointment"]
    assert sorted(m["to"] for m in smtp.messages) == ["pat0@example.org", "pat2@example.org"]
    # The cancellation found at the re-check was ingested: the whole enrollment followed it.
    with rt.sessions() as session:
        enrollment = session.scalars(select(Enrollment).join(ScheduledStep).where(
            ScheduledStep.id == cancelled_step)).one()
        left = session.scalars(select(ScheduledStep.state).where(
            ScheduledStep.enrollment_id == enrollment.id)).all()
    assert StepState.SCHEDULED not in left


def test_an_appointment_the_chunk_search_leaves_out_is_searched_alone_and_if_deleted_not_sent(
    rt: Runtime, fhir: FhirTestServer, smtp: SmtpServer,
) -> None:
    booked = _book(rt, 3)
    deleted = booked[2][0]
    gone = httpx.delete(f"{fhir.base_url}/Appointment/{deleted['id']}")
    assert gone.status_code in (200, 204), gone.text
    fhir.clear_requests()

    outcomes = jobs.send_steps(rt, [step_id for _, step_id in booked])

    assert [o.state for o in outcomes] == [StepState.SENT, StepState.SENT, StepState.CANCELLED]
    # one search for the chunk; the appointment it left out searched again on its own (an EHR
    # that took only one `_id` value would have left out the others too): not there, cancelled
    searched = [r["query"] for r in fhir.requests() if r["path"] == "/Appointment"]
    assert len(searched) == 2 and str(deleted["id"]) in str(searched[1])
    assert booked[0][0]["id"] not in str(searched[1])
    assert sorted(m["to"] for m in smtp.messages) == ["pat0@example.org", "pat1@example.org"]


def test_anchors_ingested_moments_ago_cost_the_chunk_one_patient_search(
    emailing: Emailing, fhir: FhirTestServer,
) -> None:
    rt = emailing(recheck_fresh_seconds=30)
    step_ids = [step_id for _, step_id in _book(rt, 3)]
    fhir.clear_requests()

    outcomes = jobs.send_steps(rt, step_ids)

    assert [o.state for o in outcomes] == [StepState.SENT] * 3
    assert _searches(fhir) == ["GET /Patient"]  # the appointments as ingested, no search


def test_an_ehr_outage_during_the_chunk_search_retries_every_step_later(
    emailing: Emailing, fhir: FhirTestServer, smtp: SmtpServer, clock: SimulatedClock,
) -> None:
    rt = emailing(fhir_retry_attempts=1)
    step_ids = [step_id for _, step_id in _book(rt, 3)]
    fhir.outage(503)
    try:
        outcomes = jobs.send_steps(rt, step_ids)
    finally:
        fhir.outage(None)

    assert [o.state for o in outcomes] == [StepState.SCHEDULED] * 3
    assert all("EHR unavailable" in (o.reason or "") for o in outcomes)
    assert smtp.messages == []


class _Killed(BaseException):
    """The worker process dying: nothing of ours catches it."""


@dataclass
class _DiesAfterProvider:
    """A channel whose worker dies right after the provider accepted its `nth` message."""

    channel: Any
    nth: int
    calls: int = 0

    def send(self, message: OutboundMessage) -> SendReceipt:
        receipt: SendReceipt = self.channel.send(message)
        self.calls += 1
        if self.calls == self.nth:
            raise _Killed
        return receipt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


def test_a_chunk_task_run_again_after_its_worker_died_sends_nothing_twice(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
    clock: SimulatedClock, tmp_path: Path,
) -> None:
    (tmp_path / "sms-now.yaml").write_text(SMS_NOW)
    rt = make_runtime(clock=clock, enqueue=_Recording(), fhir_base_url=fhir.base_url,
                      rules_dir=str(tmp_path), twilio_account_sid=ACCOUNT_SID,
                      twilio_auth_token=AUTH_TOKEN, twilio_from="+15555550100",
                      twilio_base_url=twilio.base_url, sms_rate_per_second=1000,
                      send_threads=1)  # one after another: the worker dies at a known step
    step_ids = [step_id for _, step_id in _book(rt, 3, mobile="+1555555{:04d}")]
    channels = rt.channels
    rt.channels = {**channels, "sms": _DiesAfterProvider(channels["sms"], nth=2)}
    with pytest.raises(_Killed):  # the second message is at Twilio, its record never written
        jobs.send_steps(rt, step_ids)
    rt.channels = channels
    assert _states(rt, step_ids) == [StepState.SENT, StepState.SENDING, StepState.QUEUED]

    # The broker delivers the unacknowledged task again: only the step never reserved is sent.
    again = jobs.send_steps(rt, step_ids)
    assert [o.state for o in again] == ["not-queued", "not-queued", StepState.SENT]
    # Past its lease the sweeper queues the step left sending; Twilio has it: recorded, not resent.
    clock.advance(timedelta(seconds=rt.settings.send_lease_seconds + 1))
    jobs.sweep(rt)
    queue = _queue(rt)
    assert queue.steps == [step_ids[1]]
    queue.steps.clear()
    assert [o.state for o in jobs.send_steps(rt, [step_ids[1]])] == [StepState.SENT]

    assert _states(rt, step_ids) == [StepState.SENT] * 3
    per_number = Counter(m["to"] for m in twilio.messages)
    assert sorted(per_number.values()) == [1, 1, 1], per_number
    drain(rt)


@dataclass
class _InFlight:
    """A channel that counts how many of its sends are under way at once (each waits on the
    provider a moment, as a real one does)."""

    channel: Any
    now: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: OutboundMessage) -> SendReceipt:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.05)
            receipt: SendReceipt = self.channel.send(message)
            return receipt
        finally:
            with self.lock:
                self.now -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_chunk_sends_to_several_patients_at_once_each_message_once(
    emailing: Emailing, smtp: SmtpServer, threads: int,
) -> None:
    rt = emailing(send_threads=threads)
    step_ids = [step_id for _, step_id in _book(rt, 6)]
    email = _InFlight(rt.channels["email"])
    rt.channels = {**rt.channels, "email": email}

    outcomes = jobs.send_steps(rt, step_ids)

    assert [o.step_id for o in outcomes] == step_ids  # answered in the chunk's order
    assert [o.state for o in outcomes] == [StepState.SENT] * 6
    assert sorted(m["To"] for m in smtp.messages) == sorted(f"pat{i}@example.org"
                                                            for i in range(6))
    # the provider waits overlap across patients only when the setting allows it
    assert (email.most > 1) == (threads > 1), email.most
    (handover,) = _queue(rt).handovers  # one, with every message of the chunk
    assert sorted(handover) == sorted(o.writeback_ids[0] for o in outcomes)
