"""The MLLP listener on Postgres, fed by python-hl7's own MLLP client as an interface engine."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7
import pytest
from hl7.mllp import open_hl7_connection
from sqlalchemy import func, select

from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.hl7_listener import Hl7Listener
from outreach.sending.send import send_step
from outreach.store.models import (
    PENDING_STATES,
    Enrollment,
    ResourceChangeRecord,
    ResourceVersion,
    ScheduledStep,
    StepState,
)
from tests.conftest import RuntimeFactory
from tests.support.hl7_messages import PID, msh, siu
from tests.support.journeys import SMS_REMINDERS
from tests.support.smtp import SmtpServer, free_port

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW + timedelta(days=5)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, smtp: SmtpServer, tmp_path: Path) -> Runtime:
    """No FHIR endpoint: the HL7 feed is all the service knows."""
    (tmp_path / "sms-reminders.yaml").write_text(SMS_REMINDERS)
    return make_runtime(rules_dir=tmp_path, clock=SimulatedClock(NOW),
                        enqueue=CollectingEnqueuer(), smtp_host="127.0.0.1", smtp_port=smtp.port,
                        smtp_from="reminders@hospital.example", organization_name="St Example")


@pytest.fixture
def port(rt: Runtime) -> Iterator[int]:
    """The listener on a free port, in its own thread and event loop."""
    loop = asyncio.new_event_loop()
    listener = Hl7Listener(rt)
    bound = loop.run_until_complete(listener.start("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield bound
    asyncio.run_coroutine_threadsafe(listener.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _exchange(port: int, *messages: str | bytes) -> list[hl7.Message]:
    """Send each message on one connection, reading its ACK before the next (as engines do);
    bytes go out as a raw frame body, unparsed."""
    async def run() -> list[hl7.Message]:
        reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        acks = []
        try:
            for message in messages:
                if isinstance(message, bytes):
                    writer.writeblock(message)
                else:
                    writer.writemessage(hl7.parse(message))
                await writer.drain()
                acks.append(await asyncio.wait_for(reader.readmessage(), 30))
        finally:
            writer.close()
        return acks
    return asyncio.run(run())


def _msa(reply: hl7.Message) -> tuple[str, str, str]:
    return (reply["MSA.F1"], reply["MSA.F2"], reply.unescape(str(reply.segment("MSA")[3])))


def _count(rt: Runtime, model: type, *where: object) -> int:
    with rt.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _booked_steps(rt: Runtime) -> int:
    return _count(rt, ScheduledStep, ScheduledStep.step_id == "booked")


def test_a_booking_is_confirmed_once_and_acknowledged(rt: Runtime, port: int) -> None:
    (reply,) = _exchange(port, siu("S12", "BOOK1", NOW, START))
    assert _msa(reply)[:2] == ("AA", "BOOK1")
    assert _count(rt, Enrollment) == 1 and _booked_steps(rt) == 1
    with rt.sessions() as session:
        booked = session.scalars(select(ScheduledStep).where(
            ScheduledStep.step_id == "booked")).one()
    assert booked.state == StepState.QUEUED
    assert isinstance(rt.enqueue, CollectingEnqueuer) and rt.enqueue.steps == [booked.id]
    # The patient's contact points are kept with its stored version, for sending without FHIR.
    with rt.sessions() as session:
        stored = session.scalars(select(ResourceVersion).where(
            ResourceVersion.resource_type == "Patient")).one()
    assert stored.resource is not None
    assert {p["system"] for p in stored.resource["telecom"]} == {"phone", "email"}


def test_the_confirmation_goes_to_the_address_in_the_message(
        rt: Runtime, port: int, smtp: SmtpServer) -> None:
    _exchange(port, siu("S12", "BOOK1", NOW, START))
    assert isinstance(rt.enqueue, CollectingEnqueuer)
    (step_id,) = rt.enqueue.steps
    send_step(rt, step_id)
    (mail,) = smtp.wait_for(1)
    assert mail["To"] == "jane@example.org"
    with rt.sessions() as session:
        assert session.get(ScheduledStep, step_id).state == StepState.SENT  # type: ignore[union-attr]


def test_a_resent_message_is_acknowledged_and_changes_nothing(rt: Runtime, port: int) -> None:
    message = siu("S12", "BOOK1", NOW, START)
    first, again = _exchange(port, message, message)
    assert _msa(first)[0] == _msa(again)[0] == "AA"
    (third,) = _exchange(port, message)  # and on a new connection
    assert _msa(third)[:2] == ("AA", "BOOK1")
    assert _count(rt, Enrollment) == 1 and _booked_steps(rt) == 1
    assert isinstance(rt.enqueue, CollectingEnqueuer) and len(rt.enqueue.steps) == 1
    assert _count(rt, ResourceChangeRecord) == 2  # the Patient and the Appointment, once each


def test_a_cancellation_cancels_the_pending_reminders(rt: Runtime, port: int) -> None:
    _exchange(port, siu("S12", "BOOK1", NOW, START))
    reminders = ScheduledStep.step_id.like("reminder-%")
    assert _count(rt, ScheduledStep, reminders, ScheduledStep.state.in_(PENDING_STATES)) == 2
    (reply,) = _exchange(port, siu("S15", "CANCEL1", NOW + timedelta(minutes=5), START))
    assert _msa(reply)[:2] == ("AA", "CANCEL1")
    assert _count(rt, ScheduledStep, reminders, ScheduledStep.state.in_(PENDING_STATES)) == 0


def test_an_older_message_arriving_late_does_not_undo_a_newer_one(
        rt: Runtime, port: int) -> None:
    _exchange(port, siu("S12", "BOOK1", NOW, START),
              siu("S15", "CANCEL1", NOW + timedelta(minutes=5), START))
    (late,) = _exchange(port, siu("S14", "MODIFY0", NOW + timedelta(minutes=1), START))
    assert _msa(late)[0] == "AA"
    reminders = ScheduledStep.step_id.like("reminder-%")
    assert _count(rt, ScheduledStep, reminders, ScheduledStep.state.in_(PENDING_STATES)) == 0
    assert _count(rt, Enrollment) == 1


def test_bad_messages_get_the_reason_and_the_connection_keeps_working(
        rt: Runtime, port: int) -> None:
    replies = _exchange(
        port,
        b"this is not an HL7 message",
        siu("S12", "NOPID", NOW, START, pid=None),
        msh("A08", "UNKNOWN1", NOW, "ADT") + "\r" + PID,
        siu("S12", "BOOK1", NOW, START),
    )
    assert [_msa(r)[:2] for r in replies] == [
        ("AR", ""), ("AE", "NOPID"), ("AR", "UNKNOWN1"), ("AA", "BOOK1")]
    assert "not an HL7 v2 message" in _msa(replies[0])[2]
    assert "PID segment is missing" in _msa(replies[1])[2]
    assert "ADT^A08" in _msa(replies[2])[2]
    assert _count(rt, Enrollment) == 1 and _booked_steps(rt) == 1


def test_an_oversized_message_is_refused_and_the_next_one_taken(rt: Runtime, port: int) -> None:
    huge = siu("S12", "HUGE1", NOW, START) + "\rNTE|1||" + "x" * (10 * 1024 * 1024)
    refused, accepted = _exchange(port, huge, siu("S12", "BOOK1", NOW, START))
    assert _msa(refused)[0] == "AR" and "larger than" in _msa(refused)[2]
    assert _msa(accepted)[:2] == ("AA", "BOOK1")
    assert _count(rt, Enrollment) == 1


def test_a_frame_cut_off_by_a_disconnect_is_neither_stored_nor_acknowledged(
        rt: Runtime, port: int) -> None:
    frame = b"\x0b" + siu("S12", "CUT1", NOW, START).encode()  # no end-of-block: cut off
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(frame[: len(frame) // 2])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""  # the listener closes without an ACK
    assert _count(rt, ResourceChangeRecord) == 0
    (reply,) = _exchange(port, siu("S12", "BOOK1", NOW, START))  # the listener is still up
    assert _msa(reply)[0] == "AA" and _booked_steps(rt) == 1


def test_the_command_listens_and_stores_what_it_acknowledges(
        rt: Runtime, pg_url: str, redis_url: str, tmp_path: Path) -> None:
    listen = free_port()
    env = {**os.environ, "OUTREACH_DATABASE_URL": pg_url, "OUTREACH_RULES_DIR": str(tmp_path),
           "OUTREACH_BROKER_URL": redis_url}
    env.pop("OUTREACH_FHIR_BASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from outreach.cli import main; main()", "hl7", "listen",
         "--port", str(listen)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "never listened"
                time.sleep(0.1)
        (reply,) = _exchange(listen, siu("S12", "CLI1", NOW, START))
        assert _msa(reply)[:2] == ("AA", "CLI1")
        assert _count(rt, Enrollment) == 1 and _booked_steps(rt) == 1
    finally:
        proc.terminate()
        _, errors = proc.communicate(timeout=10)
    assert "CLI1" in errors  # the message is logged by its control id
    assert "Doe" not in errors and "jane@example.org" not in errors  # ids only in logs
