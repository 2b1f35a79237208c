"""Handing ids to Celery workers (in-process when no broker is configured)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)


class CeleryEnqueuer:
    """A failed publish (broker down) is logged, not raised: the step is already `queued` in
    the database, and the sweeper queues it again after OUTREACH_REQUEUE_AFTER_SECONDS."""

    def send_steps(self, step_ids: list[int]) -> None:
        from outreach.worker.tasks import send_step

        for step_id in step_ids:
            try:
                send_step.delay(step_id)
            except OperationalError as exc:
                log.warning("could not enqueue step %s (%s); the sweeper will retry", step_id,
                            type(exc).__name__)

    def write_back(self, writeback_ids: list[int]) -> None:
        from outreach.worker.tasks import write_back

        for writeback_id in writeback_ids:
            try:
                write_back.delay(writeback_id)
            except OperationalError as exc:
                log.warning("could not enqueue write-back %s (%s); the sweeper will retry",
                            writeback_id, type(exc).__name__)


@dataclass
class CollectingEnqueuer:
    """Stands in for the broker: ids wait here until the caller (the demo, a test) runs them."""

    steps: list[int] = field(default_factory=list)
    writebacks: list[int] = field(default_factory=list)

    def send_steps(self, step_ids: list[int]) -> None:
        self.steps.extend(step_ids)

    def write_back(self, writeback_ids: list[int]) -> None:
        self.writebacks.extend(writeback_ids)
