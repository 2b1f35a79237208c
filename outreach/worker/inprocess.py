"""The pipeline run in one process on a simulated clock, as the worker and beat would run it:
when the clock passes a step's due time, the sweep claims it and it is sent (the demo, and
`outreach simulate`'s forecast)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select

from outreach.access import waitlist
from outreach.broker.enqueue import CollectingEnqueuer, chunks
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.sending import sweep as sweeper
from outreach.sending.send import SendOutcome
from outreach.store.models import ScheduledStep, StepState
from outreach.worker import jobs

OnSend = Callable[[int, SendOutcome], None]

# Built once: the runner asks this after every tick.
_NEXT_DUE = select(func.min(ScheduledStep.due_at)).where(
    ScheduledStep.state == StepState.SCHEDULED)


class InProcess:
    """`rt` must have a SimulatedClock and a CollectingEnqueuer. `write_back=False` drops the
    write-backs (a forecast writes nothing anywhere): their outbox rows are left pending and
    its sweeps claim only steps, as no sweep of this run will ever write them."""

    def __init__(self, rt: Runtime, on_send: OnSend | None = None, *,
                 write_back: bool = True) -> None:
        assert isinstance(rt.clock, SimulatedClock) and isinstance(rt.enqueue, CollectingEnqueuer)
        self.rt, self.clock, self.queue = rt, rt.clock, rt.enqueue
        self.on_send, self.write_back = on_send, write_back
        # The sweep's waitlist part has work only if a loaded journey can open a backfill.
        self._backfills = any(j.spec.backfill is not None for j in rt.journeys.journeys)

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
                for batch in chunks(rows, self.rt.settings.writeback_batch_size):
                    jobs.write_back_many(self.rt, batch)

    def _sweep(self) -> None:
        if self.write_back:
            jobs.sweep(self.rt)
            return
        # Writing nothing back, the sweep claims only steps. Nor does it purge early delivery
        # statuses: none arrive here (no provider calls back), so there are none to purge.
        sweeper.sweep_steps(self.rt)
        if self._backfills:
            waitlist.advance(self.rt)

    def next_due(self) -> datetime | None:
        with self.rt.engine.connect() as connection:  # one read: no session needed
            return connection.execute(_NEXT_DUE).scalar()

    def run_until(self, moment: datetime) -> None:
        """Advance the clock to `moment`, sweeping and sending each due step on the way."""
        while (due := self.next_due()) is not None and due <= moment:
            self.clock.set(max(due, self.clock.now()))
            self._sweep()
            self.drain()
        self.clock.set(max(moment, self.clock.now()))
