"""Group commit: concurrent callers' versions are ingested together, one transaction per batch.

A caller hands its version to a single committer thread and waits for its own result, which it
gets only once the batch holding it has committed (the acknowledgement still means "stored").
The committer takes whatever is waiting when it is free, up to `MAX_BATCH`: a lone caller is
never held back, and under load the batches grow by themselves while the previous one commits."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from outreach.core.ports import Runtime
from outreach.intake.batch import ingest_many
from outreach.intake.ingest import IngestResult

log = logging.getLogger(__name__)

MAX_BATCH = 100
# Batches in flight at once: while one waits on Postgres (its statements, its commit's WAL
# flush) the next is being built; rows locked in key order keep them from deadlocking.
COMMITTERS = 2
_IDLE_SECONDS = 5.0  # the committer thread ends after this long without work


@dataclass
class _Waiting:
    rt: Runtime
    resource: dict[str, Any]
    source: str
    done: Future[IngestResult | Exception] = field(default_factory=Future)


class _Committer:
    """Threads that drain one queue batch by batch (started on demand, ended when idle)."""

    def __init__(self, threads: int) -> None:
        self._queue: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = threads
        self._running = 0

    def submit(self, waiting: _Waiting) -> None:
        self._queue.put(waiting)
        with self._lock:
            if self._running < self._threads:
                self._running += 1
                threading.Thread(target=self._run, name="ingest-committer", daemon=True).start()

    def _next_batch(self) -> list[_Waiting] | None:
        try:
            batch = [self._queue.get(timeout=_IDLE_SECONDS)]
        except queue.Empty:
            return None
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                with self._lock:
                    if self._queue.empty():  # nothing slipped in while we gave up
                        self._running -= 1
                        return
                continue
            # Each runtime (a test may have several) gets its own transaction.
            by_runtime: dict[int, list[_Waiting]] = {}
            for waiting in batch:
                by_runtime.setdefault(id(waiting.rt), []).append(waiting)
            for group in by_runtime.values():
                self._commit(group)

    @staticmethod
    def _commit(group: list[_Waiting]) -> None:
        try:
            results = ingest_many(group[0].rt, [(w.resource, w.source) for w in group])
        except Exception as exc:  # every waiting caller gets the error
            log.exception("group commit of %s versions failed", len(group))
            results = [exc] * len(group)
        for waiting, result in zip(group, results, strict=True):
            waiting.done.set_result(result)


_COMMITTER = _Committer(COMMITTERS)


def ingest(rt: Runtime, resource: dict[str, Any], source: str) -> IngestResult:
    """`intake.ingest.ingest` through the committer: returns (or raises) once this version's
    batch has committed."""
    waiting = _Waiting(rt, resource, source)
    _COMMITTER.submit(waiting)
    result = waiting.done.result()
    if isinstance(result, Exception):
        raise result
    return result
