"""Group commit: concurrent callers' versions are ingested together, one transaction per batch.

Leader and followers: a caller that finds fewer than `LEADERS` batches in flight leads one: it
takes whatever is waiting (up to `MAX_BATCH`), ingests it in one transaction and hands every
caller in the batch its own result. The others wait until their batch has committed, or until a
finishing leader passes the lead to the first still waiting. So every answer still means
"stored"; a lone caller commits at once on its own thread, and under load the batches grow by
themselves while the previous ones commit.

Under load a new leader first waits a moment (`GATHER`) for the callers that are about to arrive:
the ones a batch just answered, whose next versions are on their way. Without it the first of
them led a batch of one while the rest queued behind it, and most of the time only one batch was
in flight."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from outreach.core.ports import Runtime
from outreach.intake.batch import ingest_many
from outreach.intake.ingest import IngestResult

log = logging.getLogger(__name__)

MAX_BATCH = 100
# Batches in flight at once: while one waits on Postgres (its statements, its commit's WAL
# flush) the next is being built; rows locked in key order keep them from deadlocking.
LEADERS = 2
# How long a new leader waits for more versions when another batch is in flight or one was just
# answered (seconds). A batch has a fixed cost of about a millisecond of CPU (its statements,
# its transaction), more than a small batch's own work; a lone caller on a quiet server never
# waits.
GATHER = 0.001


@dataclass(eq=False)
class _Waiting:
    rt: Runtime
    resource: dict[str, Any]
    source: str
    result: IngestResult | Exception | None = None
    lead: bool = False  # this caller's thread is to lead the next batch
    taken: bool = False  # in a batch (this caller's or another leader's)
    wake: threading.Event = field(default_factory=threading.Event)


class _Group:
    """The queue of waiting versions and the count of leaders."""

    def __init__(self, leaders: int) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Waiting] = deque()
        self._leaders = leaders
        self._leading = 0
        self._committing = 0  # batches in flight
        self._answered_at = float("-inf")  # when the last batch of several was answered

    def ingest(self, waiting: _Waiting) -> IngestResult | Exception:
        busy = False
        with self._lock:
            self._queue.append(waiting)
            if self._leading < self._leaders:
                self._leading += 1
                waiting.lead = True
                busy = self._committing > 0 or (
                    time.monotonic() - self._answered_at < GATHER)
        if waiting.lead and busy:
            # Woken early only by this caller's own result (another leader took its version);
            # the flags below are read either way.
            waiting.wake.wait(GATHER)
            waiting.wake.clear()
        # The flags are the truth, the event only a wake-up: a lead handed over after this
        # caller's batch committed is still taken (and passed on), never dropped.
        while True:
            if waiting.lead:
                self._lead(waiting)
            elif waiting.result is not None:
                return waiting.result
            else:
                waiting.wake.wait()
                waiting.wake.clear()

    def _lead(self, leader: _Waiting) -> None:
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            for waiting in batch:
                waiting.taken = True
            self._committing += 1
        # Each runtime (a test may have several) gets its own transaction.
        by_runtime: dict[int, list[_Waiting]] = {}
        for waiting in batch:
            by_runtime.setdefault(id(waiting.rt), []).append(waiting)
        for group in by_runtime.values():
            self._commit(group)  # hands any error to the batch's callers, raises none
        with self._lock:
            self._committing -= 1
            if len(batch) > 1:
                self._answered_at = time.monotonic()
            if not leader.taken:
                return  # its own version is still queued behind a full batch: lead again
            # Committed, or in another leader's batch: this caller only waits for its answer
            # now (leading on would spin on an empty queue until that batch commits).
            leader.lead = False
            # The lead passes to the first caller still waiting that does not lead already (a
            # caller that found a free slot is queued and leading at once: a second lead handed
            # to it would be lost for good, and with it one batch in flight).
            heir = next((w for w in self._queue if not w.lead), None)
            if heir is not None:
                heir.lead = True
                heir.wake.set()
            else:
                self._leading -= 1

    @staticmethod
    def _commit(group: list[_Waiting]) -> None:
        results: list[IngestResult | Exception]
        try:
            results = ingest_many(group[0].rt, [(w.resource, w.source) for w in group])
        except Exception as exc:  # every caller in the batch gets the error
            log.exception("group commit of %s versions failed", len(group))
            results = [exc] * len(group)
        for waiting, result in zip(group, results, strict=True):
            waiting.result = result
            waiting.wake.set()


_GROUP = _Group(LEADERS)


def ingest(rt: Runtime, resource: dict[str, Any], source: str) -> IngestResult:
    """`intake.ingest.ingest` in a group commit: returns (or raises) once this version's batch
    has committed."""
    result = _GROUP.ingest(_Waiting(rt, resource, source))
    if isinstance(result, Exception):
        raise result
    return result
