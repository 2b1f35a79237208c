"""Celery tasks. Each carries ids only and delegates to the service functions."""

from __future__ import annotations

import logging
from typing import Any

from connector.errors import FhirUnavailable
from outreach import dispatch, polling, runtime, topics
from outreach.worker.celery_app import celery_app

log = logging.getLogger(__name__)


@celery_app.task(name="outreach.send_step")  # type: ignore[untyped-decorator]
def send_step(step_id: int) -> dict[str, Any]:
    return dispatch.send_step(runtime.current(), step_id).as_dict()


@celery_app.task(name="outreach.write_back")  # type: ignore[untyped-decorator]
def write_back(writeback_id: int) -> str:
    return dispatch.write_back(runtime.current(), writeback_id)


@celery_app.task(name="outreach.sweep")  # type: ignore[untyped-decorator]
def sweep() -> dict[str, int]:
    result = dispatch.sweep(runtime.current())
    return {"steps": len(result.step_ids), "writebacks": len(result.writeback_ids)}


@celery_app.task(name="outreach.poll")  # type: ignore[untyped-decorator]
def poll() -> dict[str, int]:
    rt = runtime.current()
    if rt.fhir is None:
        return {}
    try:
        topics.check_silence(rt)  # a topic subscription gone quiet: recover what it lost
        return polling.poll_once(rt)
    except FhirUnavailable as exc:
        # The client already backed off and retried; the cursor holds what was ingested, so the
        # next scheduled pass resumes from there.
        log.warning("poll stopped, the EHR is unavailable (%s); resuming next pass", exc)
        return {}
