"""`outreach poll --once` against the real FHIR server: cursor, overlap, paging, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from outreach.polling import poll_once
from outreach.store.models import Enrollment, PollCursor, ResourceChangeRecord
from tests.conftest import RuntimeFactory
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer


def test_poll_picks_up_every_change_once_and_moves_the_cursor(
    make_runtime: RuntimeFactory, fhir: FhirTestServer
) -> None:
    rt = make_runtime(fhir_base_url=fhir.base_url)
    assert rt.fhir is not None
    start = datetime.now(UTC) + timedelta(days=5)
    created = [rt.fhir.create(appointment(f"Patient/p{i}", start))[0] for i in range(120)]

    assert poll_once(rt) == {"Appointment": 120}  # more than one page of 100
    assert poll_once(rt) == {"Appointment": 0}    # the overlap re-reads; nothing is new
    rt.fhir.update({**created[0], "status": "cancelled"})
    assert poll_once(rt) == {"Appointment": 1}

    with rt.sessions() as session:
        assert session.scalar(select(func.count(ResourceChangeRecord.id))) == 121
        assert session.scalar(select(func.count(Enrollment.id))) == 120
        assert session.get_one(PollCursor, "Appointment").last_updated is not None
