"""Handing ids to Celery workers (in-process when no broker is configured)."""

from __future__ import annotations


class CeleryEnqueuer:
    def send_steps(self, step_ids: list[int]) -> None:
        from outreach.worker.tasks import send_step

        for step_id in step_ids:
            send_step.delay(step_id)

    def write_back(self, writeback_ids: list[int]) -> None:
        from outreach.worker.tasks import write_back

        for writeback_id in writeback_ids:
            write_back.delay(writeback_id)
