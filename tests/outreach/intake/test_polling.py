"""Polling against the real FHIR server: cursor, overlap, paging, the date-window sweep for EHRs
without `_lastUpdated`, backfill, and outages (the server's outage switch)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from connector.errors import FhirUnavailable
from outreach.core.ports import Runtime
from outreach.intake.polling import backfill, poll_once
from outreach.store.models import Enrollment, PollCursor, ResourceChangeRecord
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer


def test_poll_picks_up_every_change_once_and_moves_the_cursor(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=5)
    created = [rt.ehr.create(appointment(f"Patient/p{i}", start))[0] for i in range(120)]

    assert poll_once(rt) == {"Appointment": 120, "Task": 0}  # more than one page of 100
    assert poll_once(rt) == {"Appointment": 0, "Task": 0}  # the overlap re-reads: nothing new
    rt.ehr.update({**created[0], "status": "cancelled"})
    assert poll_once(rt) == {"Appointment": 1, "Task": 0}

    with rt.sessions() as session:
        assert session.scalar(select(func.count(ResourceChangeRecord.id))) == 121
        assert session.scalar(select(func.count(Enrollment.id))) == 120
        assert session.get_one(PollCursor, "Appointment").last_updated is not None


def _ids(rt: Runtime, source: str | None = None) -> list[str]:
    query = select(ResourceChangeRecord.resource_id).where(
        ResourceChangeRecord.outcome == "processed")
    if source:
        query = query.where(ResourceChangeRecord.source == source)
    with rt.sessions() as session:
        return list(session.scalars(query))


def test_without_last_updated_a_date_window_is_swept(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    fhir.features(without_search_params=["_lastUpdated"])
    rt = make_runtime(fhir_base_url=fhir.base_url, poll_window_future_days=30,
                      poll_window_slice_days=7)
    assert rt.ehr is not None
    now = datetime.now(UTC)
    inside = [rt.ehr.create(appointment("Patient/p1", now + timedelta(days=d)))[0]
              for d in (1, 8, 20)]
    rt.ehr.create(appointment("Patient/p1", now + timedelta(days=45)))  # beyond the window

    assert poll_once(rt) == {"Appointment": 3}  # and no Task: not searchable by _lastUpdated
    assert sorted(_ids(rt, "poll-window")) == sorted(a["id"] for a in inside)
    assert poll_once(rt) == {"Appointment": 0}
    rt.ehr.update({**inside[1], "status": "cancelled"})
    assert poll_once(rt) == {"Appointment": 1}


def test_our_tasks_are_not_followed_on_an_ehr_that_cannot_search_them_by_identifier(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    fhir.features(without_search_params=["identifier"])
    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    rt.ehr.create(appointment("Patient/p1", datetime.now(UTC) + timedelta(days=3)))
    assert poll_once(rt) == {"Appointment": 1}
    assert "cannot search Tasks by identifier and _lastUpdated" in caplog.text


def test_a_type_the_ehr_cannot_poll_is_refused_clearly(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    fhir.features(without_search_params=["_lastUpdated", "date"])
    rt = make_runtime(fhir_base_url=fhir.base_url)

    assert poll_once(rt) == {}
    assert "neither _lastUpdated nor date" in caplog.text


def test_a_statement_listing_nothing_is_polled_anyway(
    make_runtime: RuntimeFactory, fhir: FhirTestServer,
) -> None:
    fhir.features(silent_metadata=True)
    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    rt.ehr.create(appointment("Patient/p1", datetime.now(UTC) + timedelta(days=3)))
    assert poll_once(rt) == {"Appointment": 1, "Task": 0}


def test_a_silent_statement_whose_search_fails_reports_what_failed(
    make_runtime: RuntimeFactory, fhir: FhirTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    fhir.features(silent_metadata=True, without_search_params=["_lastUpdated"])
    rt = make_runtime(fhir_base_url=fhir.base_url)

    assert poll_once(rt) == {}  # refused by the EHR, not by us, and the pass goes on
    assert "tried polling by last-updated and the EHR refused" in caplog.text
    assert "400" in caplog.text


def test_backfill_ingests_a_date_range_and_sets_the_cursor(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    rt = make_runtime(fhir_base_url=fhir.base_url, poll_overlap_seconds=0)
    assert rt.ehr is not None
    now = datetime.now(UTC)
    wanted = [rt.ehr.create(appointment("Patient/p1", now + timedelta(days=d)))[0]
              for d in (2, 10)]
    rt.ehr.create(appointment("Patient/p1", now + timedelta(days=60)))

    assert backfill(rt, now, now + timedelta(days=30)) == {"Appointment": 2}
    assert sorted(_ids(rt, "backfill")) == sorted(a["id"] for a in wanted)
    with rt.sessions() as session:
        assert session.get_one(PollCursor, "Appointment").last_updated >= now
    assert poll_once(rt) == {"Appointment": 0, "Task": 0}  # nothing changed since the backfill


def test_ehr_down_part_way_then_the_next_pass_resumes_from_the_cursor(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    rt = make_runtime(fhir_base_url=fhir.base_url, fhir_retry_attempts=2)
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=5)
    for i in range(250):
        rt.ehr.create(appointment(f"Patient/p{i}", start))
    fhir.outage(503, after=2)  # metadata and the first page answer; then the EHR is down

    with pytest.raises(FhirUnavailable):
        poll_once(rt)
    assert len(_ids(rt)) == 100  # the first page, ingested and behind the cursor

    fhir.outage(None)
    assert poll_once(rt) == {"Appointment": 150, "Task": 0}
    assert len(_ids(rt)) == len(set(_ids(rt))) == 250


def test_429_with_retry_after_is_waited_out_inside_the_pass(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=5)
    for i in range(150):
        rt.ehr.create(appointment(f"Patient/p{i}", start))
    fhir.outage(429, after=2, count=2, retry_after=0.2)

    began = time.monotonic()
    assert poll_once(rt) == {"Appointment": 150, "Task": 0}
    assert time.monotonic() - began >= 0.4


def test_a_page_is_stored_in_one_transaction(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    """A first backfill of a big EHR: a page of 100 versions costs one commit, not 100."""
    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.ehr is not None
    start = datetime.now(UTC) + timedelta(days=5)
    for i in range(120):
        rt.ehr.create(appointment(f"Patient/pp{i}", start))
    commits: list[int] = []
    event.listen(rt.engine, "commit", lambda _conn: commits.append(1))

    assert poll_once(rt) == {"Appointment": 120, "Task": 0}
    # Two pages, plus the cursor's own transactions; one at a time this was 120 and more.
    assert len(commits) <= 8
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Enrollment.id))) == 120
