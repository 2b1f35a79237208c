"""Celery task for scheduled journeys: beat runs it every minute; each cron tick runs once."""

from __future__ import annotations

from outreach import campaigns, runtime
from outreach.worker.celery_app import celery_app


@celery_app.task(name="outreach.run_campaigns")  # type: ignore[untyped-decorator]
def run_campaigns() -> dict[str, int]:
    results = campaigns.run_due_campaigns(runtime.current())
    return {f"{r.journey}@{r.run_key}": r.enrolled for r in results if r.ran}
