"""`outreach report --publish`: the period's figures written to the EHR as a summary
MeasureReport against our Measure, through the outbox (upsert by identifier: publishing a
period again replaces its report)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.measure import PeriodFigures, build_measure, build_measure_report
from outreach.core.ports import Runtime
from outreach.reports.outcomes import Period
from outreach.store.db import transaction
from outreach.store.models import Writeback
from outreach.writeback import outbox


@dataclass(frozen=True, slots=True)
class Published:
    resource_type: str
    state: str  # done | retry (the sweeper tries again) | local (the EHR cannot take it)
    server_id: str | None
    error: str | None


def publish(rt: Runtime, chosen: Period, figures: Mapping[str, Any]) -> list[Published]:
    system = rt.settings.identifier_system
    report = build_measure_report(PeriodFigures(system, chosen.first, chosen.last,
                                                rt.clock.now(), figures))
    resources = [build_measure(system), report]
    with transaction(rt.sessions) as session:
        ids = [outbox.queue(session, resource, system, resource["identifier"][0]["value"],
                            rt.clock.now(), operation="upsert").id for resource in resources]
    results = []
    for row_id, resource in zip(ids, resources, strict=True):
        state = outbox.write_back(rt, row_id)
        with rt.sessions() as session:
            row = session.get_one(Writeback, row_id)
            results.append(Published(resource["resourceType"], state, row.server_id,
                                     row.last_error if state != "done" else None))
    return results
