"""Write-back in batches, on real Postgres and the real FHIR server: a batch of sent messages is
one transaction Bundle; a refused Bundle isolates its bad row; retries write nothing twice; rows
another task holds are left to it; an EHR without transactions gets one request per row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from connector.capabilities import Capabilities
from connector.client import FhirClient
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.sending.sweep import sweep
from outreach.store.db import transaction
from outreach.store.models import StepState, Writeback
from outreach.worker import jobs
from outreach.writeback import outbox
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
SYSTEM = "urn:fhir-outreach:step"


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer,
       clock: SimulatedClock) -> Runtime:
    # One try per request: an outage fails at once instead of after in-line retries.
    return make_runtime(clock=clock, fhir_base_url=fhir.base_url, fhir_retry_attempts=1,
                        smtp_host="127.0.0.1", smtp_port=smtp.port,
                        smtp_from="reminders@hospital.example")


def _ehr(rt: Runtime) -> FhirClient:
    assert isinstance(rt.ehr, FhirClient)
    return rt.ehr


def _queue(rt: Runtime) -> CollectingEnqueuer:
    assert isinstance(rt.enqueue, CollectingEnqueuer)
    return rt.enqueue


def _sent(rt: Runtime, count: int) -> tuple[list[str], list[int]]:
    """`count` bookings ingested (their planned CommunicationRequests written) and their
    confirmations sent: the appointment ids, and the write-back ids the sends queued (one per
    message: its Communication, which carries its CommunicationRequest)."""
    queue = _queue(rt)
    appointments = []
    for index in range(count):
        pat, _ = _ehr(rt).create(patient(email=f"p{index}@example.org"))
        appt, _ = _ehr(rt).create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5)))
        ingest(rt, appt, source="test")
        appointments.append(appt["id"])
    jobs.write_back_many(rt, queue.writebacks)
    queue.writebacks.clear()
    steps, queue.steps[:] = list(queue.steps), []
    for step_id in steps:
        assert jobs.send_step(rt, step_id).state == StepState.SENT
    assert not queue.steps
    sent, queue.writebacks[:] = list(queue.writebacks), []
    return appointments, sent


def _communication(value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Communication", "status": "completed",
            "identifier": [{"system": SYSTEM, "value": value}],
            "subject": {"reference": "Patient/p1"},
            "payload": [{"contentString": "See you on Monday"}], **extra}


def _put(rt: Runtime, resource: dict[str, Any], value: str, **options: Any) -> int:
    with transaction(rt.sessions) as session:
        return outbox.put(session, resource, SYSTEM, value, rt.clock.now(), **options)


def _rows(rt: Runtime) -> dict[int, Writeback]:
    with rt.sessions() as session:
        return {row.id: row for row in session.scalars(select(Writeback))}


def _trips(fhir: FhirTestServer) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in fhir.requests() if r["path"] != "/metadata"]


def _about(rt: Runtime, rtype: str, appointment_id: str) -> list[dict[str, Any]]:
    about = {"reference": f"Appointment/{appointment_id}"}
    return [r for r in _ehr(rt).search(rtype, {"_count": 200}) if about in r.get("about", [])]


def _in_ehr(rt: Runtime, value: str) -> list[dict[str, Any]]:
    return list(_ehr(rt).search("Communication", {"identifier": f"{SYSTEM}|{value}"}))


def test_a_batch_of_sent_messages_costs_the_ehr_one_request(
    rt: Runtime, fhir: FhirTestServer,
) -> None:
    appointments, sent = _sent(rt, 6)
    fhir.clear_requests()

    outcomes = jobs.write_back_many(rt, sent)

    assert _trips(fhir) == ["POST /"]  # six Communications and their six requests
    assert len(outcomes) == 12 and set(outcomes.values()) == {"done"}
    assert {row.state for row in _rows(rt).values()} == {"done"}
    for appointment_id in appointments:
        assert len(_about(rt, "Communication", appointment_id)) == 1
        statuses = [r["status"] for r in _about(rt, "CommunicationRequest", appointment_id)]
        assert "completed" in statuses and "active" in statuses


def test_a_bundle_refused_for_one_bad_row_still_writes_the_others(
    rt: Runtime, fhir: FhirTestServer,
) -> None:
    good = [_put(rt, _communication(f"s{i}"), f"s{i}") for i in range(3)]
    # Valid JSON, not valid R4: the EHR refuses it, and with it the whole transaction.
    bad = _put(rt, _communication("s-bad", notAnElement=True), "s-bad")
    fhir.clear_requests()

    outcomes = jobs.write_back_many(rt, [*good, bad])

    assert outcomes == {**dict.fromkeys(good, "done"), bad: "retry"}
    assert _trips(fhir)[0] == "POST /"  # the Bundle, refused; then one request per row
    assert _trips(fhir)[1:] == ["POST /Communication"] * 4
    for i in range(3):
        assert len(_in_ehr(rt, f"s{i}")) == 1
    assert _in_ehr(rt, "s-bad") == []
    row = _rows(rt)[bad]
    assert (row.state, row.attempts) == ("pending", 1)
    assert "400" in (row.last_error or "") and row.next_attempt_at > NOW
    assert row.claimed_until is None  # the sweep offers it again when due


def test_a_batch_written_again_creates_no_duplicates(
    rt: Runtime, fhir: FhirTestServer, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    appointments, sent = _sent(rt, 3)
    fhir.outage(503)
    outcomes = jobs.write_back_many(rt, sent)
    assert set(outcomes.values()) == {"retry"} and len(outcomes) == 6
    fhir.outage(None)
    assert all(_about(rt, "Communication", a) == [] for a in appointments)  # all or nothing

    clock.set(max(row.next_attempt_at for row in _rows(rt).values()))
    due = sweep(rt).writeback_ids  # the sweeper offers the pairs again, both rows each
    assert len(due) == 6
    # The worker dies after the EHR committed the Bundle, before it recorded the rows done.
    monkeypatch.setattr(outbox, "_all_done", _dies)
    with pytest.raises(RuntimeError):
        jobs.write_back_many(rt, due)
    monkeypatch.undo()
    assert all(len(_about(rt, "Communication", a)) == 1 for a in appointments)

    clock.advance(outbox.CLAIM_LEASE)  # its claim runs out: the sweep offers the rows again
    again = sweep(rt).writeback_ids
    assert sorted(again) == sorted(due)
    assert set(jobs.write_back_many(rt, again).values()) == {"done"}
    for appointment_id in appointments:  # the same Bundle again added nothing
        assert len(_about(rt, "Communication", appointment_id)) == 1
        statuses = sorted(r["status"] for r in _about(rt, "CommunicationRequest", appointment_id))
        assert statuses.count("completed") == 1 and len(statuses) == 4


def test_rows_another_task_holds_are_left_to_it(
    rt: Runtime, fhir: FhirTestServer, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [_put(rt, _communication(f"s{i}"), f"s{i}") for i in range(3)]
    real_capabilities = outbox.capabilities
    meanwhile: list[dict[int, str]] = []

    def second_task(client: FhirClient) -> Capabilities:
        # Runs after the first task claimed the rows, before it writes them.
        monkeypatch.setattr(outbox, "capabilities", real_capabilities)
        meanwhile.append(jobs.write_back_many(rt, ids))
        meanwhile.append({ids[0]: jobs.write_back(rt, ids[0])})  # a task from before an upgrade
        return real_capabilities(client)

    monkeypatch.setattr(outbox, "capabilities", second_task)
    assert set(jobs.write_back_many(rt, ids).values()) == {"done"}
    assert meanwhile == [{}, {ids[0]: "claimed"}]  # they wrote nothing
    assert sweep(rt).writeback_ids == []

    # A row locked by a transaction still claiming it (another task's) is skipped, not waited
    # for: two tasks claiming a sent message's pair from either end cannot deadlock.
    locked, free = (_put(rt, _communication(f"u{i}"), f"u{i}") for i in range(2))
    with rt.engine.connect() as other:
        other.execute(select(Writeback.id).where(Writeback.id == locked).with_for_update())
        assert jobs.write_back_many(rt, [locked, free]) == {free: "done"}
        other.rollback()
    assert jobs.write_back_many(rt, [locked]) == {locked: "done"}

    # A task that died holding rows frees them when its claim runs out; the sweep offers them.
    more = [_put(rt, _communication(f"t{i}"), f"t{i}") for i in range(2)]
    monkeypatch.setattr(outbox, "_transactions", _dies)
    with pytest.raises(RuntimeError):
        jobs.write_back_many(rt, more)
    monkeypatch.undo()
    assert jobs.write_back_many(rt, more) == {}  # still held
    assert sweep(rt).writeback_ids == []
    clock.advance(outbox.CLAIM_LEASE)
    assert sorted(sweep(rt).writeback_ids) == more
    assert set(jobs.write_back_many(rt, more).values()) == {"done"}
    assert [len(_in_ehr(rt, f"t{i}")) for i in range(2)] == [1, 1]


def test_a_row_refreshed_while_its_batch_is_written_is_written_again(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = _put(rt, _communication("s1", status="in-progress"), "s1")
    refreshed = _put(rt, _communication("s2", status="in-progress"), "s2")
    real_capabilities = outbox.capabilities

    def refresh_meanwhile(client: FhirClient) -> Capabilities:
        # Runs after the batch claimed its rows, before it writes them: a delivery status.
        monkeypatch.setattr(outbox, "capabilities", real_capabilities)
        assert _put(rt, _communication("s2"), "s2", operation="upsert") == refreshed
        return real_capabilities(client)

    monkeypatch.setattr(outbox, "capabilities", refresh_meanwhile)
    assert jobs.write_back_many(rt, [kept, refreshed]) == {kept: "done", refreshed: "superseded"}
    row = _rows(rt)[refreshed]
    assert (row.state, row.resource["status"], row.claimed_until) == ("pending", "completed", None)
    assert _queue(rt).writebacks == [refreshed]  # queued again, and nobody holds it

    assert jobs.write_back_many(rt, [refreshed]) == {refreshed: "done"}
    (written,) = _in_ehr(rt, "s2")
    assert written["status"] == "completed" and written["id"] == row.server_id


def _dies(*_args: object) -> None:
    raise RuntimeError("worker lost")


def test_an_ehr_without_transactions_gets_one_request_per_row(
    rt: Runtime, fhir: FhirTestServer,
) -> None:
    fhir.features(without_transactions=True)  # before anything reads its statement
    appointments, sent = _sent(rt, 3)
    fhir.clear_requests()

    outcomes = jobs.write_back_many(rt, sent)

    assert set(outcomes.values()) == {"done"} and len(outcomes) == 6
    trips = _trips(fhir)
    assert len(trips) == 6 and "POST /" not in trips
    assert trips.count("POST /Communication") == 3
    for appointment_id in appointments:
        assert len(_about(rt, "Communication", appointment_id)) == 1


def test_an_ehr_that_caps_a_transaction_gets_bundles_of_that_size(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, smtp: SmtpServer, clock: SimulatedClock,
) -> None:
    fhir.features(max_transaction_entries=4)
    rt = make_runtime(clock=clock, fhir_base_url=fhir.base_url, smtp_host="127.0.0.1",
                      smtp_port=smtp.port, smtp_from="reminders@hospital.example",
                      writeback_bundle_entries=4)
    appointments, sent = _sent(rt, 5)
    fhir.clear_requests()

    assert set(jobs.write_back_many(rt, sent).values()) == {"done"}

    assert _trips(fhir) == ["POST /"] * 3  # 2 + 2 + 1 messages, each with its request
    for appointment_id in appointments:
        assert len(_about(rt, "Communication", appointment_id)) == 1


def test_other_kinds_of_rows_join_the_bundle(rt: Runtime, fhir: FhirTestServer) -> None:
    task = _put(rt, {"resourceType": "Task", "status": "requested", "intent": "order",
                     "identifier": [{"system": SYSTEM, "value": "task-1"}]}, "task-1",
                operation="upsert")
    created = _put(rt, _communication("s1"), "s1")
    written, _ = _ehr(rt).create(_communication("s2", status="in-progress"))
    status = _put(rt, _communication("s2"), "s2", operation="upsert")  # a delivery status
    fhir.clear_requests()

    assert set(jobs.write_back_many(rt, [task, created, status]).values()) == {"done"}

    assert _trips(fhir) == ["POST /"]
    (updated,) = _in_ehr(rt, "s2")
    assert (updated["id"], updated["status"]) == (written["id"], "completed")
    assert _rows(rt)[status].server_id == written["id"]
