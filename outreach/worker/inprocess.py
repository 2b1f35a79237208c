"""The pipeline run in one process on a simulated clock, as the worker and beat would run it:
when the clock passes a step's due time, the sweep claims it and it is sent (the demo, and
`outreach simulate`'s forecast)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import bindparam, func, select, update

from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.sending.send import SendOutcome
from outreach.store.db import transaction
from outreach.store.models import ScheduledStep, StepState, Writeback
from outreach.worker import jobs
from outreach.writeback.outbox import request_of

OnSend = Callable[[int, SendOutcome], None]

_CHUNK = 500  # ids per IN list
# Built once: the runner asks this after every tick.
_NEXT_DUE = select(func.min(ScheduledStep.due_at)).where(
    ScheduledStep.state == StepState.SCHEDULED)
# A dropped write-back is set aside as kept locally, as for an EHR that cannot take it: left
# pending, every later sweep would claim it again once its lease ran out.
_SET_ASIDE = update(Writeback).where(
    Writeback.id.in_(bindparam("ids", expanding=True)), Writeback.state == "pending"
).values(state="local", last_error="not written: nothing is written back here")
# A sent step's CommunicationRequest is not queued: its Communication's write-back carries it,
# so it is set aside with that one.
_SENT_COMMUNICATIONS = select(Writeback.identifier).where(
    Writeback.id.in_(bindparam("ids", expanding=True)), Writeback.state == "pending",
    Writeback.resource_type == "Communication", Writeback.step_id.is_not(None))
_SET_ASIDE_REQUESTS = update(Writeback).where(
    Writeback.identifier.in_(bindparam("identifiers", expanding=True)),
    Writeback.resource_type == "CommunicationRequest", Writeback.state == "pending"
).values(state="local", last_error="not written: nothing is written back here")


class InProcess:
    """`rt` must have a SimulatedClock and a CollectingEnqueuer. `write_back=False` drops the
    write-backs (a forecast writes nothing anywhere)."""

    def __init__(self, rt: Runtime, on_send: OnSend | None = None, *,
                 write_back: bool = True) -> None:
        assert isinstance(rt.clock, SimulatedClock) and isinstance(rt.enqueue, CollectingEnqueuer)
        self.rt, self.clock, self.queue = rt, rt.clock, rt.enqueue
        self.on_send, self.write_back = on_send, write_back
        self._aside: list[int] = []  # dropped write-backs, not yet set aside

    def drain(self) -> None:
        """Run what is queued: every send, then every write-back, until nothing is left."""
        while self.queue.steps or self.queue.writebacks:
            while self.queue.steps:
                steps, self.queue.steps[:] = list(self.queue.steps), []
                for index, step_id in enumerate(steps):
                    outcome = jobs.send_step(self.rt, step_id)
                    if self.on_send is not None:
                        self.on_send(step_id, outcome)
                    if self.queue.steps:  # a send queued another: keep the order of a FIFO
                        self.queue.steps[:0] = steps[index + 1:]
                        break
            rows, self.queue.writebacks[:] = list(self.queue.writebacks), []
            if self.write_back:
                # In batches, as the worker's tasks take them (CeleryEnqueuer.write_back).
                size = self.rt.settings.writeback_batch_size
                for start in range(0, len(rows), size):
                    jobs.write_back_many(self.rt, rows[start:start + size])
            else:
                self._aside.extend(rows)

    def _set_aside(self) -> None:
        """The dropped write-backs, set aside in one transaction before the next sweep could
        claim them (not one transaction per drain)."""
        if not self._aside:
            return
        with transaction(self.rt.sessions) as session:
            for start in range(0, len(self._aside), _CHUNK):
                ids = self._aside[start:start + _CHUNK]
                carried = [request_of(identifier) for identifier in
                           session.execute(_SENT_COMMUNICATIONS, {"ids": ids}).scalars()]
                if carried:
                    session.execute(_SET_ASIDE_REQUESTS, {"identifiers": carried})
                session.execute(_SET_ASIDE, {"ids": ids})
        self._aside.clear()

    def next_due(self) -> datetime | None:
        with self.rt.engine.connect() as connection:  # one read: no session needed
            return connection.execute(_NEXT_DUE).scalar()

    def run_until(self, moment: datetime) -> None:
        """Advance the clock to `moment`, sweeping and sending each due step on the way."""
        while (due := self.next_due()) is not None and due <= moment:
            self.clock.set(max(due, self.clock.now()))
            self._set_aside()
            jobs.sweep(self.rt)
            self.drain()
        self.clock.set(max(moment, self.clock.now()))
