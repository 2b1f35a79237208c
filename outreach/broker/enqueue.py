"""Handing ids to Celery workers by task name (in-process when no broker is configured)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from outreach.broker.app import POLL, SEND_STEPS, WRITE_BACK_MANY
from outreach.core.settings import SEND_BATCH_SIZE, WRITEBACK_BATCH_SIZE

log = logging.getLogger(__name__)


def chunks(ids: list[int], size: int) -> list[list[int]]:
    """`ids` in order, `size` at a time: what one send or write-back task takes."""
    return [ids[start:start + size] for start in range(0, len(ids), size)]


class CeleryEnqueuer:
    """Tasks are looked up by name, as warehouse does, so nothing that enqueues imports them.
    With a broker, `send_task` publishes; without one (`task_always_eager`), the registered task
    runs here and now. A failed publish (broker down) is logged, not raised: the row is already
    `queued`/`pending` in the database, and the sweeper queues it again. Steps go out in chunks
    of `send_batch` ids, one task each (OUTREACH_SEND_BATCH_SIZE); write-backs in batches of
    `writeback_batch` (OUTREACH_WRITEBACK_BATCH_SIZE)."""

    def __init__(self, app: Celery, send_batch: int = SEND_BATCH_SIZE,
                 writeback_batch: int = WRITEBACK_BATCH_SIZE) -> None:
        self._app = app
        self._send_batch = send_batch
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
        for chunk in chunks(step_ids, self._send_batch):
            self._send(SEND_STEPS, [chunk], f"{len(chunk)} steps from {chunk[0]}")

    def write_back(self, writeback_ids: list[int]) -> None:
        """One task per batch of ids: each batch is written in one transaction Bundle."""
        for batch in chunks(writeback_ids, self._writeback_batch):
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
