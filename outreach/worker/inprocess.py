"""The pipeline run in one process on a simulated clock, as the worker and beat would run it:
when the clock passes a step's due time, the sweep claims it and it is sent (the demo, and
`outreach simulate`'s forecast)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select

from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.sending.send import SendOutcome
from outreach.store.models import ScheduledStep, StepState
from outreach.worker import jobs

OnSend = Callable[[int, SendOutcome], None]


class InProcess:
    """`rt` must have a SimulatedClock and a CollectingEnqueuer. `write_back=False` drops the
    write-backs (a forecast writes nothing anywhere)."""

    def __init__(self, rt: Runtime, on_send: OnSend | None = None, *,
                 write_back: bool = True) -> None:
        assert isinstance(rt.clock, SimulatedClock) and isinstance(rt.enqueue, CollectingEnqueuer)
        self.rt, self.clock, self.queue = rt, rt.clock, rt.enqueue
        self.on_send, self.write_back = on_send, write_back

    def drain(self) -> None:
        """Run what is queued: every send, then every write-back, until nothing is left."""
        while self.queue.steps or self.queue.writebacks:
            while self.queue.steps:
                step_id = self.queue.steps.pop(0)
                outcome = jobs.send_step(self.rt, step_id)
                if self.on_send is not None:
                    self.on_send(step_id, outcome)
            while self.queue.writebacks:
                row = self.queue.writebacks.pop(0)
                if self.write_back:
                    jobs.write_back(self.rt, row)

    def next_due(self) -> datetime | None:
        with self.rt.sessions() as session:
            return session.scalar(select(func.min(ScheduledStep.due_at)).where(
                ScheduledStep.state == StepState.SCHEDULED))

    def run_until(self, moment: datetime) -> None:
        """Advance the clock to `moment`, sweeping and sending each due step on the way."""
        while (due := self.next_due()) is not None and due <= moment:
            self.clock.set(max(due, self.clock.now()))
            jobs.sweep(self.rt)
            self.drain()
        self.clock.set(max(moment, self.clock.now()))
