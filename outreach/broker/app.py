"""The Celery application, configured from settings (in-process when no broker is set)."""

from __future__ import annotations

from celery import Celery
from kombu.entity import Queue

from outreach.core.settings import Settings, get_settings

# Tasks are named here and defined in outreach.worker.tasks, which a worker imports by this
# name: what enqueues (intake, sending, the API) never imports the tasks (outreach.broker.enqueue).
TASKS_MODULE = "outreach.worker.tasks"
SEND_STEP, WRITE_BACK, SWEEP, POLL, RUN_CAMPAIGNS = (
    "outreach.send_step", "outreach.write_back", "outreach.sweep", "outreach.poll",
    "outreach.run_campaigns")
# Write-backs are published in batches (a list of ids per task); WRITE_BACK, one id, stays
# registered for the tasks an older version queued before an upgrade.
WRITE_BACK_MANY = "outreach.write_back_many"
# Due steps are published in chunks (OUTREACH_SEND_BATCH_SIZE): one task re-checks a chunk with
# one EHR search. SEND_STEP stays registered for single-step tasks queued before an upgrade.
SEND_STEPS = "outreach.send_steps"

# Queues: sends on theirs, write-backs on theirs (a slow EHR never holds up a send behind its
# write-backs), everything else (sweep, poll, campaigns) on the default one. `outreach worker`
# consumes all three unless told `--queues`.
SENDS_QUEUE, WRITEBACK_QUEUE, DEFAULT_QUEUE = "sends", "writeback", "celery"
QUEUES = (SENDS_QUEUE, WRITEBACK_QUEUE, DEFAULT_QUEUE)

celery_app = Celery("outreach", include=[TASKS_MODULE])


def configure(app: Celery, settings: Settings) -> Celery:
    """Delivery semantics sending relies on (README, "exactly-once"): acknowledge after the task
    ran, one message per worker process at a time, one visibility timeout longer than any task;
    nothing long-delayed goes through the broker (due steps wait in the database)."""
    # Drop connections and producer pools bound to a previous broker: a process (the tests, the
    # benchmarks) may re-configure the app after it has already published.
    app.close()
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    app.conf.update(
        broker_url=settings.broker_url or "memory://",
        task_always_eager=settings.broker_url is None,
        task_eager_propagates=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        broker_connection_retry_on_startup=True,
        # Fail a publish fast when the broker is down: the database still has the step queued.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1,
                                   "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        task_default_queue=DEFAULT_QUEUE,
        # Declared, so a worker told no queues (start_worker in the tests) consumes all three.
        task_queues=[Queue(name) for name in QUEUES],  # type: ignore[no-untyped-call]
        task_routes={SEND_STEP: {"queue": SENDS_QUEUE}, SEND_STEPS: {"queue": SENDS_QUEUE},
                     WRITE_BACK: {"queue": WRITEBACK_QUEUE},
                     WRITE_BACK_MANY: {"queue": WRITEBACK_QUEUE}},
        beat_schedule={
            "sweep-due-steps": {
                "task": SWEEP,
                "schedule": settings.sweep_interval_seconds,
                "options": {"expires": settings.sweep_interval_seconds * 2},
            },
            "poll-ehr": {
                "task": POLL,
                "schedule": settings.poll_interval_seconds,
                "options": {"expires": settings.poll_interval_seconds},
            },
            # Scheduled journeys: each cron tick runs once (campaign_runs), so a minute is enough.
            "run-campaigns": {
                "task": RUN_CAMPAIGNS,
                "schedule": 60.0,
                "options": {"expires": 60.0},
            },
        },
    )
    return app


configure(celery_app, get_settings())

