"""The write-back outbox on real Postgres and the real FHIR server: queue, write, retry, keep."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from connector.capabilities import Capabilities, parse_capabilities
from connector.client import FhirClient
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.sending.sweep import sweep
from outreach.store.db import transaction
from outreach.store.models import Writeback
from outreach.writeback import outbox
from tests.conftest import RuntimeFactory
from tests.support.fhir_server import FhirTestServer

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
SYSTEM = "urn:fhir-outreach:step"


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer) -> Runtime:
    # One try per request: an outage fails at once instead of after in-line retries.
    return make_runtime(clock=SimulatedClock(NOW), fhir_base_url=fhir.base_url,
                        fhir_retry_attempts=1)


def _ehr(rt: Runtime) -> FhirClient:
    assert isinstance(rt.ehr, FhirClient)
    return rt.ehr


def _communication(value: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Communication", "status": status,
            "identifier": [{"system": SYSTEM, "value": value}],
            "subject": {"reference": "Patient/p1"},
            "payload": [{"contentString": "See you on Monday"}], **extra}


def _queue(rt: Runtime, resource: dict[str, Any], value: str, **options: Any) -> int:
    with transaction(rt.sessions) as session:
        return outbox.queue(session, resource, SYSTEM, value, rt.clock.now(), **options).id


def _row(rt: Runtime, writeback_id: int) -> Writeback:
    with rt.sessions() as session:
        return session.get_one(Writeback, writeback_id)


def _row_count(rt: Runtime) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count(Writeback.id))) or 0


def _in_ehr(rt: Runtime, value: str, rtype: str = "Communication") -> list[dict[str, Any]]:
    return list(_ehr(rt).search(rtype, {"identifier": f"{SYSTEM}|{value}"}))


def _statement(**interactions: tuple[str, ...]) -> Capabilities:
    return parse_capabilities({
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "fhirVersion": "4.0.1", "format": ["json"], "date": "2026-01-01",
        "rest": [{"mode": "server", "resource": [
            {"type": rtype, "interaction": [{"code": code} for code in codes]}
            for rtype, codes in interactions.items()]}]})


def test_queue_adds_a_pending_row_due_now(rt: Runtime) -> None:
    row = _row(rt, _queue(rt, _communication("s1"), "s1"))
    assert (row.state, row.operation, row.attempts) == ("pending", "create", 0)
    assert row.identifier == f"{SYSTEM}|s1" and row.resource_type == "Communication"
    assert row.next_attempt_at == NOW


def test_queuing_a_known_identifier_again_refreshes_its_row(rt: Runtime) -> None:
    first = _queue(rt, _communication("s1", "in-progress"), "s1")
    assert outbox.write_back(rt, first) == "done"
    again = _queue(rt, _communication("s1", "completed"), "s1", operation="upsert")
    assert again == first and _row_count(rt) == 1
    row = _row(rt, first)
    assert (row.state, row.operation, row.resource["status"]) == ("pending", "upsert", "completed")


def test_writing_the_same_row_twice_creates_one_resource(rt: Runtime) -> None:
    writeback_id = _queue(rt, _communication("s1"), "s1")
    assert outbox.write_back(rt, writeback_id) == "done"
    with transaction(rt.sessions) as session:  # the worker died before recording "done"
        session.get_one(Writeback, writeback_id).state = "pending"
    assert outbox.write_back(rt, writeback_id) == "done"
    (written,) = _in_ehr(rt, "s1")
    assert _row(rt, writeback_id).server_id == written["id"]


def test_a_create_of_an_identifier_the_ehr_already_has_adds_no_duplicate(rt: Runtime) -> None:
    existing, _ = _ehr(rt).create(_communication("s1"))  # e.g. written by an earlier install
    writeback_id = _queue(rt, _communication("s1"), "s1")
    assert outbox.write_back(rt, writeback_id) == "done"
    assert [c["id"] for c in _in_ehr(rt, "s1")] == [existing["id"]]
    assert _row(rt, writeback_id).server_id == existing["id"]


def test_an_upsert_updates_the_resource_carrying_our_identifier(rt: Runtime) -> None:
    existing, _ = _ehr(rt).create(_communication("s1", "in-progress"))  # its id unknown to us
    writeback_id = _queue(rt, _communication("s1", "completed"), "s1", operation="upsert")
    assert outbox.write_back(rt, writeback_id) == "done"
    (written,) = _in_ehr(rt, "s1")
    assert (written["id"], written["status"]) == (existing["id"], "completed")
    assert written["meta"]["versionId"] != existing["meta"]["versionId"]


def test_an_upsert_after_our_create_updates_that_resource(rt: Runtime) -> None:
    writeback_id = _queue(rt, _communication("s1", "in-progress"), "s1")
    outbox.write_back(rt, writeback_id)
    server_id = _row(rt, writeback_id).server_id
    _queue(rt, _communication("s1", "completed", received="2026-01-01T12:00:00Z"), "s1",
           operation="upsert")
    assert outbox.write_back(rt, writeback_id) == "done"
    (written,) = _in_ehr(rt, "s1")
    assert (written["id"], written["status"]) == (server_id, "completed")
    assert written["received"] == "2026-01-01T12:00:00Z"


def test_an_upsert_of_an_identifier_the_ehr_never_saw_creates_it(rt: Runtime) -> None:
    writeback_id = _queue(rt, _communication("s1"), "s1", operation="upsert")
    assert outbox.write_back(rt, writeback_id) == "done"
    assert len(_in_ehr(rt, "s1")) == 1


def test_ehr_down_keeps_the_row_pending_and_it_is_written_when_back(
    rt: Runtime, fhir: FhirTestServer
) -> None:
    writeback_id = _queue(rt, _communication("s1"), "s1")
    fhir.outage(503)
    assert outbox.write_back(rt, writeback_id) == "retry"
    row = _row(rt, writeback_id)
    assert (row.state, row.attempts) == ("pending", 1)
    assert "503" in (row.last_error or "") and row.next_attempt_at > NOW
    fhir.outage(None)
    assert _in_ehr(rt, "s1") == []  # nothing reached the EHR, and nothing is lost
    assert outbox.write_back(rt, writeback_id) == "done"
    assert len(_in_ehr(rt, "s1")) == 1
    assert _row(rt, writeback_id).attempts == 2


def test_a_row_refreshed_while_being_written_is_superseded_and_written_again(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    writeback_id = _queue(rt, _communication("s1", "in-progress"), "s1")
    real_capabilities = outbox.capabilities

    def refresh_meanwhile(client: FhirClient) -> Capabilities:
        # Runs after write_back read the row and before it writes to the EHR.
        monkeypatch.setattr(outbox, "capabilities", real_capabilities)
        _queue(rt, _communication("s1", "completed"), "s1", operation="upsert")
        return real_capabilities(client)

    monkeypatch.setattr(outbox, "capabilities", refresh_meanwhile)
    assert outbox.write_back(rt, writeback_id) == "superseded"
    row = _row(rt, writeback_id)
    assert row.state == "pending" and row.resource["status"] == "completed"
    (written,) = _in_ehr(rt, "s1")
    assert written["status"] == "in-progress" and row.server_id == written["id"]

    assert outbox.write_back(rt, writeback_id) == "done"
    (written,) = _in_ehr(rt, "s1")
    assert written["status"] == "completed"


def test_a_write_the_ehr_cannot_take_is_kept_locally(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    statement = _statement(Communication=("create", "read"))
    monkeypatch.setattr(outbox, "capabilities", lambda _client: statement)
    assert outbox.unsupported(rt, "Communication", "create") is None
    assert outbox.unsupported(rt, "Communication", "upsert") == (
        "the EHR does not support Communication update, search-type")
    assert outbox.unsupported(rt, "Task", "create") == "the EHR does not support Task create"

    creatable = _queue(rt, _communication("s1"), "s1")
    updatable = _queue(rt, _communication("s2"), "s2", operation="upsert")
    assert outbox.write_back(rt, creatable) == "done"
    assert outbox.write_back(rt, updatable) == "local"
    row = _row(rt, updatable)
    assert (row.state, row.attempts) == ("local", 1)
    assert row.last_error == "the EHR does not support Communication update, search-type"
    assert len(_in_ehr(rt, "s1")) == 1 and _in_ehr(rt, "s2") == []


def test_a_statement_listing_nothing_lets_the_write_be_tried(
    rt: Runtime, fhir: FhirTestServer,
) -> None:
    fhir.features(silent_metadata=True)
    assert outbox.support_report(rt) == []
    written = _queue(rt, _communication("s1"), "s1", operation="upsert")
    assert outbox.write_back(rt, written) == "done"
    assert len(_in_ehr(rt, "s1")) == 1

    # What fails is reported as the EHR's answer, and retried: not kept local unasked.
    fhir.features(silent_metadata=True, without_resources=["Task"])
    task = _queue(rt, {"resourceType": "Task", "status": "requested", "intent": "order"}, "t1",
                  operation="upsert")
    assert outbox.write_back(rt, task) == "retry"
    row = _row(rt, task)
    assert row.state == "pending" and "400" in (row.last_error or "")


def test_without_an_ehr_the_write_back_waits_for_one(make_runtime: RuntimeFactory) -> None:
    rt = make_runtime(clock=SimulatedClock(NOW))
    assert rt.ehr is None
    writeback_id = _queue(rt, _communication("s1"), "s1")
    assert outbox.unsupported(rt, "Communication") is None  # not kept local: retried
    assert outbox.write_back(rt, writeback_id) == "retry"
    row = _row(rt, writeback_id)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error == "no EHR configured for write-back" and row.next_attempt_at > NOW


def test_an_older_write_landing_after_a_newer_one_does_not_win(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    writeback_id = _queue(rt, _communication("s1", "preparation"), "s1")
    outbox.write_back(rt, writeback_id)
    _queue(rt, _communication("s1", "stopped"), "s1", operation="upsert")
    real_capabilities = outbox.capabilities

    def newer_write_meanwhile(client: FhirClient) -> Capabilities:
        # A second worker writes a newer refresh of the row while this one is in flight.
        monkeypatch.setattr(outbox, "capabilities", real_capabilities)
        _queue(rt, _communication("s1", "completed"), "s1", operation="upsert")
        assert outbox.write_back(rt, writeback_id) == "done"
        return real_capabilities(client)

    monkeypatch.setattr(outbox, "capabilities", newer_write_meanwhile)
    assert outbox.write_back(rt, writeback_id) == "superseded"
    for due in sweep(rt).writeback_ids:  # whatever the sweeper still finds is written
        outbox.write_back(rt, due)
    (written,) = _in_ehr(rt, "s1")
    assert written["status"] == "completed"
