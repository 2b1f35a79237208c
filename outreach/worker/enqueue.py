"""Handing ids to Celery workers (in-process when no broker is configured)."""

from __future__ import annotations

from dataclasses import dataclass, field


class CeleryEnqueuer:
    def send_steps(self, step_ids: list[int]) -> None:
        from outreach.worker.tasks import send_step

        for step_id in step_ids:
            send_step.delay(step_id)

    def write_back(self, writeback_ids: list[int]) -> None:
        from outreach.worker.tasks import write_back

        for writeback_id in writeback_ids:
            write_back.delay(writeback_id)


@dataclass
class CollectingEnqueuer:
    """Stands in for the broker: ids wait here until the caller (the demo, a test) runs them."""

    steps: list[int] = field(default_factory=list)
    writebacks: list[int] = field(default_factory=list)

    def send_steps(self, step_ids: list[int]) -> None:
        self.steps.extend(step_ids)

    def write_back(self, writeback_ids: list[int]) -> None:
        self.writebacks.extend(writeback_ids)
