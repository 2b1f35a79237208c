"""Ingest throughput: notifications/s through `ingest_notified` (the rest-hook endpoint's work
minus HTTP: payload validation, the duplicate check, row lock, diff/classification, the change and
version rows, rule matching and planning) on Postgres, through group commit as the endpoint does
(each caller returns once its own notification's batch has committed). As many concurrent callers
as `outreach serve` has threads for the endpoint (`OUTREACH_NOTIFY_THREADS`, 128: its own
limiter, not anyio's shared 40). Like `serve`, the bench freezes the startup heap
(`core.heap`) once the runtime is built. The backfill row is the poller's path: pages of 100
versions, each page one transaction (`intake.batch.ingest_many`).
`serve_peak_rss_mb` is the peak memory of a real `outreach serve` taking notifications over HTTP
(bench.serve_memory).

No EHR is configured, so the payload is trusted and never re-read: this is the path of
`OUTREACH_VERIFY_NOTIFICATIONS=false`. With verification on (the default) each new version also
costs one EHR read (an HTTP round trip to the EHR, not measured here); a redelivery of a recorded
version costs no EHR read either way.

Baseline, same run, same Postgres: the same number of notifications written as plain rows (one
resource_changes insert + one resource_versions upsert per notification, one transaction each,
same callers): what recording each notification on its own costs, before any planning."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench import serve_memory
from bench.result import Result
from connector.resources import validate_resource
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core import heap
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.intake import group_commit
from outreach.intake.batch import ingest_many
from outreach.intake.notifications import ingest_notified
from outreach.runtime import build_runtime
from tests.support.database import temporary_database
from tests.support.fhir_data import appointment

PAGE = 100


def _notifications(count: int, *, booked: bool, prefix: str = "") -> list[dict[str, Any]]:
    start = datetime.now(UTC) + timedelta(days=5)
    status = "booked" if booked else "proposed"  # proposed: no journey starts, pure ingest
    return [appointment(f"Patient/{prefix}p{i}", start, aid=f"{prefix}a{i}-{status}",
                        status=status,
                        version="1", updated=datetime.now(UTC)) for i in range(count)]


def _rate(work: Callable[[dict[str, Any]], object], items: list[dict[str, Any]],
          callers: int) -> float:
    began = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(work, items))
    return len(items) / (time.perf_counter() - began)


def _plain_insert(rt: Runtime) -> Callable[[dict[str, Any]], object]:
    sql_change = text(
        "INSERT INTO resource_changes (resource_type, resource_id, version_id, kind, source,"
        " outcome, last_updated, received_at) VALUES ('Appointment', :id, :v, 'created',"
        " 'baseline', 'processed', now(), now())")
    sql_version = text(
        "INSERT INTO resource_versions (resource_type, resource_id, version_id, last_updated,"
        " deleted, resource, updated_at) VALUES ('Appointment', :id, :v, now(), false,"
        " CAST(:doc AS jsonb), now()) ON CONFLICT (resource_type, resource_id) DO UPDATE"
        " SET version_id = excluded.version_id")

    def write(resource: dict[str, Any]) -> object:
        import json

        with rt.engine.begin() as conn:
            params = {"id": "base-" + resource["id"], "v": "1", "doc": json.dumps(resource)}
            conn.execute(sql_change, params)
            return conn.execute(sql_version, params)

    return write


def run(iterations: int = 100) -> list[Result]:
    count = max(iterations, 20) * 20
    with temporary_database() as url:
        settings = load_settings(database_url=url, webhook_secret="bench-secret-0123456789")
        callers = settings.notify_threads  # the endpoint's own threads in `outreach serve`
        rt = build_runtime(settings, enqueue=CollectingEnqueuer())
        heap.freeze_startup_heap()  # as `outreach serve` does before it takes requests
        try:
            def notify(resource: dict[str, Any]) -> object:
                validate_resource(resource, "Appointment")  # what the endpoint does first
                return ingest_notified(rt, "Appointment", resource["id"], resource, "bench",
                                       via=group_commit.ingest)

            # Warm-up: pools, imports, statements and templates built once (a booking's too).
            _rate(notify, _notifications(50, booked=False), callers)
            _rate(notify, _notifications(50, booked=True, prefix="w"), callers)
            baseline = _rate(_plain_insert(rt), _notifications(count, booked=False), callers)
            plain = _rate(notify, _notifications(count, booked=False), callers)
            booked = _rate(notify, [{**r, "id": r["id"] + "b"}
                                    for r in _notifications(count, booked=True)], callers)
            dups = _notifications(count, booked=False)  # already ingested above: redeliveries
            duplicate = _rate(notify, dups, callers)
            pages = [(r, "bench") for r in _notifications(count, booked=True, prefix="f")]
            began = time.perf_counter()
            for first in range(0, len(pages), PAGE):
                ingest_many(rt, pages[first:first + PAGE])
            backfill = len(pages) / (time.perf_counter() - began)
        finally:
            rt.engine.dispose()
            gc.unfreeze()  # the next benchmark in this process starts from its own heap
    note = f"{count} notifications, {callers} callers, Postgres, payload trusted"
    return [
        Result("ingest_notifications_per_s", plain, "/s", baseline, note + ", no journey starts"),
        Result("ingest_booked_per_s", booked, "/s", baseline,
               note + ", each starts a journey (4 steps planned)"),
        Result("ingest_redelivered_per_s", duplicate, "/s", baseline, note + ", duplicates"),
        Result("ingest_backfill_booked_per_s", backfill, "/s", baseline,
               f"{count} bookings in pages of {PAGE} (one transaction each, as the poller),"
               " 1 caller, each starts a journey"),
        *serve_memory.run(count),
    ]
