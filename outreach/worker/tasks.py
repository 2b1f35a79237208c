"""The Celery tasks, registered under the names in outreach.broker.app. Each carries ids only and
runs its job (outreach.worker.jobs) on this process's runtime."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_init

from outreach import runtime
from outreach.broker.app import (
    POLL,
    RUN_CAMPAIGNS,
    SEND_STEP,
    SEND_STEPS,
    SWEEP,
    WRITE_BACK,
    WRITE_BACK_MANY,
    celery_app,
)
from outreach.core import heap, redact
from outreach.worker import jobs

log = logging.getLogger(__name__)


@celery_app.task(name=SEND_STEP)  # type: ignore[untyped-decorator]
def send_step(step_id: int) -> dict[str, Any]:
    return jobs.send_step(runtime.current(), step_id).as_dict()


@celery_app.task(name=SEND_STEPS)  # type: ignore[untyped-decorator]
def send_steps(step_ids: list[int]) -> list[dict[str, Any]]:
    return [outcome.as_dict() for outcome in jobs.send_steps(runtime.current(), step_ids)]


@celery_app.task(name=WRITE_BACK)  # type: ignore[untyped-decorator]
def write_back(writeback_id: int) -> str:
    """One row: what an older version queued before an upgrade."""
    return jobs.write_back(runtime.current(), writeback_id)


@celery_app.task(name=WRITE_BACK_MANY)  # type: ignore[untyped-decorator]
def write_back_many(writeback_ids: list[int]) -> dict[str, int]:
    return dict(Counter(jobs.write_back_many(runtime.current(), writeback_ids).values()))


@celery_app.task(name=SWEEP)  # type: ignore[untyped-decorator]
def sweep() -> dict[str, int]:
    result = jobs.sweep(runtime.current())
    return {"steps": len(result.step_ids), "writebacks": len(result.writeback_ids)}


@celery_app.task(name=POLL)  # type: ignore[untyped-decorator]
def poll() -> dict[str, int]:
    return jobs.poll(runtime.current())


@celery_app.task(name=RUN_CAMPAIGNS)  # type: ignore[untyped-decorator]
def run_campaigns() -> dict[str, int]:
    results = jobs.run_campaigns(runtime.current())
    return {f"{r.journey}@{r.run_key}": r.enrolled for r in results if r.ran}


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_runtime_per_process(**_kwargs: object) -> None:
    """A pool process must not share its parent's HTTP and database connections: two processes
    reading one socket get each other's responses. Each child builds its own runtime, here,
    then freezes what it holds (imports, journeys, runtime) out of the collector's full passes:
    they live as long as the process, and walking them cost every task (outreach.core.heap)."""
    runtime.install(None)
    try:
        runtime.current()
    except Exception:  # the first task raises it again, where Celery reports it
        log.exception("worker process: the runtime could not be built")
        return
    heap.freeze_startup_heap()


@after_setup_logger.connect  # type: ignore[untyped-decorator]
@after_setup_task_logger.connect  # type: ignore[untyped-decorator]
def _redact_worker_logs(logger: logging.Logger, **_kwargs: object) -> None:
    """Celery sets up its own handlers: mask phone numbers and e-mail addresses there too."""
    redact.install(logger)

