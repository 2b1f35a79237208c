"""Handing ids to Celery workers by task name (in-process when no broker is configured)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from outreach.broker.app import POLL, SEND_STEP, WRITE_BACK_MANY

log = logging.getLogger(__name__)


class CeleryEnqueuer:
    """Tasks are looked up by name, as warehouse does, so nothing that enqueues imports them.
    With a broker, `send_task` publishes; without one (`task_always_eager`), the registered task
    runs here and now. A failed publish (broker down) is logged, not raised: the row is already
    `queued`/`pending` in the database, and the sweeper queues it again."""

    def __init__(self, app: Celery, writeback_batch: int = 25) -> None:
        self._app = app
        self._writeback_batch = writeback_batch

    def _send(self, name: str, args: list[Any], what: str) -> None:
        try:
            if self._app.conf.task_always_eager:
                self._app.loader.import_default_modules()  # registers the tasks by name
                self._app.tasks[name].apply_async(args=args)
            else:
                self._app.send_task(name, args=args)
        except OperationalError as exc:
            log.warning("could not enqueue %s (%s); the sweeper will retry", what,
                        type(exc).__name__)

    def send_steps(self, step_ids: list[int]) -> None:
        for step_id in step_ids:
            self._send(SEND_STEP, [step_id], f"step {step_id}")

    def write_back(self, writeback_ids: list[int]) -> None:
        """One task per batch of ids: each batch is written in one transaction Bundle."""
        size = self._writeback_batch
        for start in range(0, len(writeback_ids), size):
            batch = writeback_ids[start:start + size]
            self._send(WRITE_BACK_MANY, [batch], f"write-backs {batch[0]}..{batch[-1]}")

    def poll(self) -> None:
        self._send(POLL, [], "a polling pass")


@dataclass
class CollectingEnqueuer:
    """Stands in for the broker: ids wait here until the caller (the demo, a test) runs them."""

    steps: list[int] = field(default_factory=list)
    writebacks: list[int] = field(default_factory=list)
    polls: int = 0

    def send_steps(self, step_ids: list[int]) -> None:
        self.steps.extend(step_ids)

    def write_back(self, writeback_ids: list[int]) -> None:
        self.writebacks.extend(writeback_ids)

    def poll(self) -> None:
        self.polls += 1
