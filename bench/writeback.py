"""Write-back in batches: sent messages' Communications and CommunicationRequests written to the
FHIR server by one task per batch (`write_back_many`, 25 messages: one transaction Bundle), against
the path before, one task per message (`write_back`, a Bundle of two). Same run, same parts, the
same kind of messages, in alternating rounds; N threads in one process, as a worker pool's tasks.

- `writeback_messages_per_s`: messages whose pair is written back, per second.
- `writeback_ehr_calls_per_message`: the FHIR server's own request log over those writes.
- `writeback_tasks_per_message`: write-back tasks (Celery messages) per message sent.
- `writeback_messages_per_s_prefork_2`: the same through a real `outreach worker
  --concurrency=2 --queues=writeback` over a private Redis, timed from publishing until every
  row is done: batches published by `CeleryEnqueuer.write_back(ids)`, against one single-id
  task per message (what a send published before)."""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import func, select

from bench.dispatch import timed
from bench.result import Result
from outreach import runtime
from outreach.broker.app import WRITE_BACK, celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer, CollectingEnqueuer
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.intake.ingest import ingest
from outreach.runtime import build_runtime
from outreach.store.models import Writeback
from outreach.worker import jobs
from tests.support.database import temporary_database
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import SmtpServer, free_port
from tests.support.worker_process import RedisProcess, WorkerProcess

JOURNEY = """
journey: bench-email
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: start
steps:
  - {id: booked, at: immediately, channel: [email], template: appointment-booked}
"""
ROUNDS = 2
_patients = itertools.count()


@contextmanager
def _stack(tmp: Path) -> Iterator[tuple[Runtime, FhirTestServer, dict[str, str]]]:
    with ExitStack() as stack:
        fhir = stack.enter_context(FhirTestServer())
        smtp = stack.enter_context(SmtpServer())
        db_url = stack.enter_context(temporary_database())
        (tmp / "bench.yaml").write_text(JOURNEY)
        values = {"database_url": db_url, "fhir_base_url": fhir.base_url, "rules_dir": str(tmp),
                  "smtp_host": "127.0.0.1", "smtp_port": str(smtp.port),
                  "smtp_from": "reminders@hospital.example", "webhook_secret": "b" * 24}
        rt = build_runtime(load_settings(**values), enqueue=CollectingEnqueuer())
        runtime.install(rt)
        stack.callback(runtime.install, None)
        env = {f"OUTREACH_{key.upper()}": value for key, value in values.items()}
        env["OUTREACH_TEST_WORKER_LOG"] = str(tmp / "worker.log")
        yield rt, fhir, env


def _sent(rt: Runtime, count: int) -> list[int]:
    """`count` bookings ingested, their planned CommunicationRequests written, their messages
    sent: the write-back ids the sends queued (one per message, its Communication's)."""
    assert rt.ehr is not None and isinstance(rt.enqueue, CollectingEnqueuer)
    queue = rt.enqueue
    start = datetime.now(UTC) + timedelta(days=5)
    for _ in range(count):
        pat, _ = rt.ehr.create(patient(email=f"p{next(_patients)}@example.org"))
        appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", start))
        ingest(rt, appt, source="bench")
    jobs.write_back_many(rt, queue.writebacks)
    queue.writebacks.clear()
    steps, queue.steps = queue.steps, []
    for step_id in steps:
        assert jobs.send_step(rt, step_id).state == "sent"
    sent, queue.writebacks = queue.writebacks, []
    assert len(sent) == count, len(sent)
    return sent


def _calls(fhir: FhirTestServer) -> int:
    return sum(1 for r in fhir.requests() if r["path"] != "/metadata")


def _not_done(rt: Runtime) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count(Writeback.id)).where(
            Writeback.state != "done")) or 0


def _drained(rt: Runtime, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _not_done(rt):
        if time.monotonic() > deadline:
            raise RuntimeError(f"write-backs not done within {timeout:.0f} s")
        time.sleep(0.02)


def _prefork(rt: Runtime, env: dict[str, str], count: int) -> tuple[float, float]:
    """Seconds to write `count` messages back through a real worker: single-id tasks (before),
    batches (after); alternating rounds, the worker started (and warmed up) once."""
    broker = RedisProcess(free_port())  # private: other sessions share the machine's Redis
    broker.start()
    configure(celery_app, rt.settings.model_copy(update={"broker_url": broker.url}))
    publisher = CeleryEnqueuer(celery_app, rt.settings.writeback_batch_size)
    spent = {"single": 0.0, "batched": 0.0}
    try:
        with WorkerProcess({**env, "OUTREACH_BROKER_URL": broker.url}, concurrency=2,
                           queues="writeback"):
            publisher.write_back(_sent(rt, 4))  # each pool process builds its runtime
            _drained(rt, timeout=120)
            for _ in range(ROUNDS):
                for path in ("single", "batched"):
                    ids = _sent(rt, count // ROUNDS)
                    began = time.perf_counter()
                    if path == "single":
                        for writeback_id in ids:
                            celery_app.send_task(WRITE_BACK, args=[writeback_id])
                    else:
                        publisher.write_back(ids)
                    _drained(rt)
                    spent[path] += time.perf_counter() - began
    finally:
        configure(celery_app, rt.settings.model_copy(update={"broker_url": None}))
        broker.kill()
    return spent["single"], spent["batched"]


def run(iterations: int = 100, workers: int = 4) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp, _stack(Path(tmp)) as (rt, fhir, env):
        batch = rt.settings.writeback_batch_size
        per_round = max(iterations // ROUNDS, batch)
        totals = {"single": [0.0, 0, 0, 0], "batched": [0.0, 0, 0, 0]}  # s, calls, tasks, msgs
        for _ in range(ROUNDS):
            for path in ("single", "batched"):
                ids = _sent(rt, per_round)
                work: list[Callable[[], object]]
                if path == "single":  # before: one task per message
                    work = [partial(jobs.write_back, rt, i) for i in ids]
                else:
                    work = [partial(jobs.write_back_many, rt, ids[k:k + batch])
                            for k in range(0, len(ids), batch)]
                fhir.clear_requests()
                seconds = timed(work, workers)
                total = totals[path]
                total[0] += seconds
                total[1] += _calls(fhir)
                total[2] += len(work)
                total[3] += len(ids)
        assert _not_done(rt) == 0, "write-backs not done"
        prefork_count = ROUNDS * per_round
        single_s, batched_s = _prefork(rt, env, prefork_count)
    single, batched = totals["single"], totals["batched"]
    note = (f"{batched[3]} + {single[3]} messages in {ROUNDS} alternating rounds, {workers} "
            f"threads, batches of {batch}; baseline: one task per message (the path before)")
    return [
        Result("writeback_messages_per_s", batched[3] / batched[0], "msgs/s",
               single[3] / single[0], note),
        Result("writeback_ehr_calls_per_message", batched[1] / batched[3], "calls",
               single[1] / single[3], "FHIR server request log, GET /metadata left out"),
        Result("writeback_tasks_per_message", batched[2] / batched[3], "tasks",
               single[2] / single[3], "write-back tasks per message sent"),
        Result("writeback_messages_per_s_prefork_2", prefork_count / batched_s, "msgs/s",
               prefork_count / single_s,
               f"{prefork_count} + {prefork_count} messages, outreach worker --concurrency=2 over "
               "Redis, publish to all done; baseline: one single-id task per message"),
    ]
