"""Dispatch: due steps → send_steps (re-check in the EHR, Twilio send, records) → Communication
and CommunicationRequest written back to the FHIR server. The steps are published as the sweep
publishes them: in chunks of OUTREACH_SEND_BATCH_SIZE, one task each, re-checked with one EHR
search per chunk. Three measurements:

- `dispatch_sends_per_s`: in one process, N threads running the chunks' jobs directly; three
  rounds alternating with the baseline (one round is about half a second).
- `ehr_calls_per_send`: the FHIR server's own request log over that run (searches + Bundles),
  per message sent, against the 4 round trips a message cost before (2 reads, 2 writes).
- `dispatch_sends_per_s_prefork_{1,2,4}`: real `outreach worker` processes (Celery prefork)
  over a private Redis, sends and write-backs each on their own queue; timed from publishing
  the send tasks until every step is sent and every write-back done. The peak memory (VmHWM)
  of those worker processes is `dispatch_worker_peak_rss_mb`.

Baselines, same parts and the same concurrency (threads, or that many processes): per message,
the bare calls the product path is built on — one FHIR search for the Appointment with its
Patient and Consents, the POST to the Twilio-shaped API, one transaction Bundle with the
Communication and its CommunicationRequest, one insert into the same Postgres."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from bench.result import Result
from connector import bundles
from connector.bundles import Entry
from connector.client import FhirClient
from connector.writeback import (
    PlannedMessage,
    SentMessage,
    build_communication,
    build_communication_request,
)
from outreach import runtime
from outreach.broker.app import celery_app, configure
from outreach.broker.enqueue import CeleryEnqueuer, CollectingEnqueuer, chunks
from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.intake.ingest import ingest
from outreach.runtime import build_runtime
from outreach.store.models import ScheduledStep, StepState, Writeback
from outreach.worker import jobs
from tests.support.database import temporary_database
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.smtp import free_port
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer
from tests.support.worker_process import RedisProcess, WorkerProcess

JOURNEY = """
journey: bench-sms
trigger: {resource: Appointment, on: [created], when: "status = 'booked'"}
anchor: start
steps:
  - {id: booked, at: immediately, channel: [sms], template: appointment-booked}
"""
OLD_CALLS_PER_SEND = 4.0  # before issue 15: Appointment read, Patient read, two writes
PREFORK_PROCESSES = (1, 2, 4)
ROUNDS = 3  # of the in-process row, alternating with its baseline
_MESSAGES_URL = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
_numbers = itertools.count()  # a mobile number per booked patient


@dataclass
class _Parts:
    rt: Runtime
    twilio: TwilioServer
    fhir: FhirTestServer
    env: dict[str, str]  # the same settings, for worker processes


@contextmanager
def _stack(tmp: Path) -> Iterator[_Parts]:
    with ExitStack() as stack:
        fhir = stack.enter_context(FhirTestServer())
        twilio = stack.enter_context(TwilioServer())
        db_url = stack.enter_context(temporary_database())
        broker = RedisProcess(free_port())  # private: other sessions share the machine's Redis
        broker.start()
        stack.callback(broker.kill)
        (tmp / "bench.yaml").write_text(JOURNEY)
        values: dict[str, Any] = {
            "database_url": db_url, "fhir_base_url": fhir.base_url, "rules_dir": str(tmp),
            "twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN,
            "twilio_from": "+15555550100", "twilio_base_url": twilio.base_url,
            "sms_rate_per_second": 100_000, "webhook_secret": "b" * 24,
        }
        rt = build_runtime(load_settings(**values), enqueue=CollectingEnqueuer())
        runtime.install(rt)
        stack.callback(runtime.install, None)
        env = {f"OUTREACH_{key.upper()}": str(value) for key, value in values.items()}
        env["OUTREACH_BROKER_URL"] = broker.url
        env["OUTREACH_TEST_WORKER_LOG"] = str(tmp / "worker.log")
        yield _Parts(rt, twilio, fhir, env)


def timed(work: Sequence[Callable[[], object]], workers: int) -> float:
    """Seconds to run `work` on `workers` threads (each job's error raised)."""
    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(job) for job in work]:
            future.result()
    return time.perf_counter() - began


def _book(rt: Runtime, count: int, workers: int) -> tuple[list[int], list[tuple[str, str]]]:
    """`count` bookings ingested, their planned CommunicationRequests written to the EHR (as the
    worker does long before the send): the confirmation steps, queued, and (patient, appointment)
    ids for the baseline."""
    assert rt.ehr is not None
    queue = rt.enqueue
    assert isinstance(queue, CollectingEnqueuer)
    start = datetime.now(UTC) + timedelta(days=5)
    refs = []
    for _ in range(count):
        pat, _ = rt.ehr.create(patient(email=None, mobile=f"+1555{next(_numbers):07d}"))
        appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", start))
        ingest(rt, appt, source="bench")
        refs.append((pat["id"], appt["id"]))
    rows, queue.writebacks = queue.writebacks, []
    timed([partial(jobs.write_back, rt, row) for row in rows], workers)
    steps, queue.steps = queue.steps, []
    return steps, refs


def _product(rt: Runtime, steps: list[int], workers: int) -> float:
    def chunk(step_ids: list[int]) -> None:
        outcomes = jobs.send_steps(rt, step_ids)
        assert [o.state for o in outcomes] == ["sent"] * len(step_ids), outcomes
        # the write-back task the worker runs next: the chunk's Communications, each with its
        # request, in one transaction Bundle
        ids = [row for outcome in outcomes for row in outcome.writeback_ids]
        written = jobs.write_back_many(rt, ids)
        assert set(ids) <= written.keys() and set(written.values()) == {"done"}, written

    seconds = timed([partial(chunk, c) for c in chunks(steps, rt.settings.send_batch_size)],
                     workers)
    assert isinstance(rt.enqueue, CollectingEnqueuer)
    rt.enqueue.writebacks.clear()  # handed over by the chunks, written above
    return seconds


# -- the bare calls ------------------------------------------------------------------------------

@dataclass
class _Bare:
    fhir: FhirClient
    http: httpx.Client
    engine: Engine


_bare: _Bare | None = None  # one per baseline process (or the bench's own, for threads)


def _bare_open(fhir_url: str, twilio_url: str, db_url: str) -> None:
    global _bare
    _bare = _Bare(FhirClient(fhir_url), httpx.Client(base_url=twilio_url,
                                                     auth=(ACCOUNT_SID, AUTH_TOKEN)),
                  create_engine(db_url, pool_size=8))


def _bare_close() -> None:
    global _bare
    if _bare is not None:
        _bare.fhir.close()
        _bare.http.close()
        _bare.engine.dispose()
        _bare = None


def _bare_one(key: str, pid: str, aid: str, fhir_only: bool = False) -> None:
    assert _bare is not None
    _bare.fhir.get("Appointment", {"_id": aid, "_include": "Appointment:patient",
                                   "_revinclude:iterate": "Consent:patient"})
    if not fhir_only:
        _bare.http.post(_MESSAGES_URL, data={"To": "+16660000000", "From": "+15555550100",
                                             "Body": "baseline"}).raise_for_status()
    now = datetime.now(UTC)
    communication = build_communication(SentMessage(
        identifier_system="urn:bench", identifier_value=key, patient=f"Patient/{pid}",
        about=f"Appointment/{aid}", channel="sms", category="reminder", sent=now,
        text="baseline"))
    request = build_communication_request(PlannedMessage(
        identifier_system="urn:bench", step_uid=key, status="completed",
        patient=f"Patient/{pid}", about=f"Appointment/{aid}", channels=("sms",),
        category="reminder", due=now, authored=now, description="baseline"))
    _bare.fhir.transaction(bundles.transaction([
        Entry(communication, "POST", "Communication",
              if_none_exist=f"identifier=urn:bench|{key}"),
        Entry(request, "POST", "CommunicationRequest"),
    ]), idempotent=True)
    if fhir_only:
        return
    with _bare.engine.begin() as conn:
        conn.execute(text("INSERT INTO poll_cursors VALUES (:t, now(), now())"), {"t": key})


def _bare_rss(_: int) -> int:
    time.sleep(0.2)  # one answer per pool process: each is busy while the others answer
    return _peak_rss_kb(os.getpid())


def _baseline_threads(parts: _Parts, refs: list[tuple[str, str]], workers: int,
                      prefix: str) -> float:
    settings = parts.rt.settings
    _bare_open(str(settings.fhir_base_url), parts.twilio.base_url, settings.database_url)
    try:
        return timed([partial(_bare_one, f"{prefix}{i}", p, a) for i, (p, a) in enumerate(refs)],
                      workers)
    finally:
        _bare_close()


def _baseline_processes(parts: _Parts, refs: list[tuple[str, str]], processes: int,
                        fhir_only: bool = False) -> tuple[float, int]:
    """The bare calls from `processes` processes (only the two FHIR ones with `fhir_only`: the
    test server's own ceiling); (seconds, peak RSS of one, kB)."""
    settings = parts.rt.settings
    context = multiprocessing.get_context("spawn")
    args = (str(settings.fhir_base_url), parts.twilio.base_url, settings.database_url)
    with context.Pool(processes, initializer=_bare_open, initargs=args) as pool:
        pool.map(_bare_rss, range(processes))  # started, imports done
        prefix = "f" if fhir_only else "p"
        work = [(f"{prefix}{processes}-{i}", p, a, fhir_only) for i, (p, a) in enumerate(refs)]
        began = time.perf_counter()
        pool.starmap(_bare_one, work, chunksize=1)
        seconds = time.perf_counter() - began
        rss = max(pool.map(_bare_rss, range(processes)))
    return seconds, rss


# -- real prefork workers ------------------------------------------------------------------------

def _peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _finished(rt: Runtime, steps: list[int]) -> bool:
    with rt.engine.connect() as conn:
        sent = conn.execute(select(func.count(ScheduledStep.id)).where(
            ScheduledStep.id.in_(steps), ScheduledStep.state == StepState.SENT)).scalar()
        pending = conn.execute(select(func.count(Writeback.id)).where(
            Writeback.state == "pending")).scalar()
    return sent == len(steps) and pending == 0


def _wait_finished(rt: Runtime, steps: list[int], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not _finished(rt, steps):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(steps)} sends not finished within {timeout:.0f} s")
        time.sleep(0.02)


def _prefork(parts: _Parts, processes: int, count: int) -> tuple[float, int]:
    """`count` sends through one `outreach worker --concurrency=processes`; (seconds, peak RSS
    of its largest process, kB)."""
    rt = parts.rt
    warmup, _ = _book(rt, 2 * processes, 8)
    steps, _ = _book(rt, count, 8)
    publisher = CeleryEnqueuer(celery_app, rt.settings.send_batch_size)
    with WorkerProcess(parts.env, concurrency=processes, queues="sends,writeback") as worker:
        for step_id in warmup:  # a task for each pool process: its connections opened
            publisher.send_steps([step_id])
        _wait_finished(rt, warmup, timeout=120)
        began = time.perf_counter()
        publisher.send_steps(steps)
        _wait_finished(rt, steps)
        seconds = time.perf_counter() - began
        rss = max((_peak_rss_kb(pid) for pid in worker.pids), default=0)
    return seconds, rss


def run(iterations: int = 300, workers: int = 8) -> list[Result]:
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp, _stack(Path(tmp)) as parts:
        rt = parts.rt
        # Alternating rounds, each side timed over all of its own: one round lasts about half a
        # second, and the FHIR server slows as it fills (its searches scan), for both alike.
        product_seconds = baseline_seconds = 0.0
        trips: list[dict[str, Any]] = []
        for round_ in range(ROUNDS):
            steps, refs = _book(rt, iterations, workers)
            parts.fhir.clear_requests()
            product_seconds += _product(rt, steps, workers)
            trips += [r for r in parts.fhir.requests() if r["path"] != "/metadata"]
            baseline_seconds += _baseline_threads(parts, refs, workers, f"t{round_}-")
        sent, batch = ROUNDS * len(steps), rt.settings.send_batch_size
        results += [
            Result("dispatch_sends_per_s", sent / product_seconds, "sends/s",
                   sent / baseline_seconds,
                   f"{sent} sends in chunks of {batch} ({ROUNDS} rounds alternating with the "
                   f"baseline), {workers} threads, Twilio-shaped API + FHIR server + Postgres; "
                   "baseline: bare calls per message"),
            Result("ehr_calls_per_send", len(trips) / sent, "calls", OLD_CALLS_PER_SEND,
                   f"FHIR server request log (searches + Bundles), sends in chunks of {batch}; "
                   "baseline: the count before (2 reads, 2 writes)"),
        ]
        configure(celery_app, rt.settings.model_copy(
            update={"broker_url": parts.env["OUTREACH_BROKER_URL"]}))
        try:
            peaks = []
            for processes in PREFORK_PROCESSES:
                seconds, rss = _prefork(parts, processes, iterations)
                base_seconds, base_rss = _baseline_processes(parts, refs, processes)
                peaks.append((processes, rss, base_rss))
                results.append(Result(
                    f"dispatch_sends_per_s_prefork_{processes}", iterations / seconds,
                    "sends/s", len(refs) / base_seconds,
                    f"{iterations} sends in chunks of {rt.settings.send_batch_size}, outreach "
                    f"worker --concurrency={processes} over Redis; baseline: the bare calls per "
                    f"message from {processes} processes"))
        finally:
            configure(celery_app, rt.settings.model_copy(update={"broker_url": None}))
        # The Node FHIR test server answers one request at a time: its ceiling for these sends.
        fhir_seconds, _ = _baseline_processes(parts, refs, PREFORK_PROCESSES[-1], fhir_only=True)
        results[-1] = replace(results[-1], note=results[-1].note + (
            f"; the FHIR test server alone (search + Bundle, {PREFORK_PROCESSES[-1]} processes) "
            f"takes {len(refs) / fhir_seconds:.0f} messages/s"))
        processes, rss, base_rss = peaks[-1]
        results.append(Result(
            "dispatch_worker_peak_rss_mb", rss / 1024, "MB", base_rss / 1024,
            "VmHWM of the largest worker process (" + ", ".join(
                f"{n} proc: {r / 1024:.0f}" for n, r, _ in peaks)
            + " MB); baseline: a bare-call process"))
    return results
