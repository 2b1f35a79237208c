"""Run what a CollectingEnqueuer holds, as a worker would: every queued send, then every queued
write-back, until nothing is left (a send queues write-backs, a skip may queue a fallback)."""

from __future__ import annotations

from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.ports import Runtime
from outreach.sending.send import SendOutcome
from outreach.worker import jobs


def drain(rt: Runtime) -> list[SendOutcome]:
    queue = rt.enqueue
    assert isinstance(queue, CollectingEnqueuer)
    outcomes = []
    while queue.steps or queue.writebacks:
        while queue.steps:
            outcomes.append(jobs.send_step(rt, queue.steps.pop(0)))
        while queue.writebacks:
            jobs.write_back(rt, queue.writebacks.pop(0))
    return outcomes
