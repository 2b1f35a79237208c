"""Write-backs published in batches reach a real `outreach worker` (prefork, Redis): one task and
one transaction Bundle per batch; a single-id task queued by an older version still runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from outreach.broker.app import WRITE_BACK, celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer
from outreach.core.ports import Runtime
from outreach.store.db import transaction
from outreach.store.models import Writeback
from outreach.writeback import outbox
from tests.conftest import RuntimeFactory
from tests.support.fhir_server import FhirTestServer
from tests.support.worker_process import WorkerProcess

SYSTEM = "urn:fhir-outreach:step"


def _communication(value: str) -> dict[str, Any]:
    return {"resourceType": "Communication", "status": "completed",
            "identifier": [{"system": SYSTEM, "value": value}],
            "subject": {"reference": "Patient/p1"}, "payload": [{"contentString": "Hello"}]}


def _pending(rt: Runtime) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count(Writeback.id)).where(
            Writeback.state == "pending")) or 0


def _wait(condition: Any, timeout: float) -> None:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.05)


def test_a_worker_writes_each_published_batch_in_one_bundle(
    make_runtime: RuntimeFactory, pg_url: str, fhir: FhirTestServer, redis_url: str,
    tmp_path: Path,
) -> None:
    env = {"OUTREACH_DATABASE_URL": pg_url, "OUTREACH_BROKER_URL": redis_url,
           "OUTREACH_FHIR_BASE_URL": fhir.base_url, "OUTREACH_WEBHOOK_SECRET": "s" * 20,
           "OUTREACH_TEST_WORKER_LOG": str(tmp_path / "worker.log")}
    rt = make_runtime(database_url=pg_url, broker_url=redis_url, fhir_base_url=fhir.base_url,
                      enqueue=CeleryEnqueuer(celery_app, writeback_batch=10))
    configure(celery_app, rt.settings)
    with transaction(rt.sessions) as session:
        ids = [outbox.put(session, _communication(f"s{i}"), SYSTEM, f"s{i}", rt.clock.now())
               for i in range(25)]
    legacy = ids.pop()
    fhir.clear_requests()

    with WorkerProcess(env, concurrency=1, queues="writeback"):
        rt.enqueue.write_back(ids)  # 24 ids: batches of 10, 10 and 4
        celery_app.send_task(WRITE_BACK, args=[legacy])  # queued before an upgrade
        _wait(lambda: _pending(rt) == 0, timeout=60)

    writes = [r for r in fhir.requests() if r["method"] != "GET"]
    assert [(r["method"], r["path"]) for r in writes].count(("POST", "/")) == 3
    assert [(r["method"], r["path"]) for r in writes].count(("POST", "/Communication")) == 1
    assert len(writes) == 4
    assert _in_ehr(rt) == 25


def _in_ehr(rt: Runtime) -> int:
    assert rt.ehr is not None
    return len(list(rt.ehr.search("Communication", {"_count": 100})))
