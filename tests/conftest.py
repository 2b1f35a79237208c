"""Shared fixtures: real Postgres, Redis, SMTP, the Medplum FHIR server, Celery and the API."""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import text

from outreach import runtime
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import Clock
from outreach.core.ports import Enqueuer, Runtime
from outreach.core.redact import redact
from outreach.core.settings import load_settings
from outreach.runtime import build_runtime
from outreach.store.db import make_engine
from outreach.store.models import Base
from tests.support.api_server import ApiServer
from tests.support.browser import ARTIFACTS, launch
from tests.support.database import PG_ADMIN_URL, temporary_database
from tests.support.fhir_server import FhirTestServer, fhir_server_session
from tests.support.smtp import SmtpServer
from tests.support.twilio_server import TwilioServer


def _claim_redis_database() -> str:
    """A Redis database no other test session on this machine is using: two sessions sharing
    one would flush each other's queues and run each other's tasks."""
    for db in range(1, 16):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.set("outreach-test:owner", os.getpid(), nx=True, ex=6 * 3600):
            atexit.register(client.delete, "outreach-test:owner")
            return f"redis://127.0.0.1:6379/{db}"
    raise RuntimeError("no free Redis database (1-15) for this test session")


WEBHOOK_SECRET = "test-secret-" + "x" * 8


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throw-away Postgres database, migrated with the real Alembic migrations."""
    with temporary_database(PG_ADMIN_URL) as url:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session database, emptied before each test."""
    engine = make_engine(pg_database)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_database


@pytest.fixture(scope="session")
def redis_database() -> str:
    """This session's Redis database, claimed when the first test that needs Redis runs: the
    tests that need none run without a Redis server."""
    return os.environ.get("OUTREACH_TEST_REDIS_URL") or _claim_redis_database()


@pytest.fixture
def redis_url(redis_database: str) -> str:
    """The session's Redis database, emptied before each test."""
    client = redis.Redis.from_url(redis_database)
    owner = client.get("outreach-test:owner")
    client.flushdb()
    if owner is not None:
        client.set("outreach-test:owner", owner, ex=6 * 3600)  # still ours
    return redis_database


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirTestServer]:
    yield from fhir_server_session()


@pytest.fixture
def fhir(fhir_server: FhirTestServer) -> FhirTestServer:
    """The real FHIR server, wiped and up."""
    fhir_server.outage(None)
    fhir_server.reset()
    return fhir_server


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    """A local server shaped like Twilio's Messages API."""
    with TwilioServer() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def make_runtime(pg_url: str) -> Iterator[RuntimeFactory]:
    """Build (and install process-wide) a Runtime from settings overrides; real parts only."""
    built: list[Runtime] = []

    def factory(*, clock: Clock | None = None, enqueue: Enqueuer | None = None,
                **overrides: Any) -> Runtime:
        values: dict[str, Any] = {"database_url": pg_url, "webhook_secret": WEBHOOK_SECRET}
        values.update(overrides)
        settings = load_settings(**values)
        rt = build_runtime(settings, enqueue=enqueue or CollectingEnqueuer(), clock=clock)
        runtime.install(rt)
        built.append(rt)
        return rt

    yield factory
    runtime.install(None)
    for rt in built:
        runtime.close(rt)


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    yield server
    server.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Headless Chromium for page tests (tests/support/browser.py)."""
    yield from launch()



# No patient data in our logs: every record our own packages log during the whole run is kept,
# and the run fails if one holds a phone number or an e-mail address (ids only).
_OUR_PACKAGES = ("outreach", "connector", "channels", "rules")
_OUR_LINES: list[str] = []


class _OurLogs(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in _OUR_PACKAGES:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            _OUR_LINES.append(f"{record.name}: {text}")


@pytest.fixture(scope="session", autouse=True)
def _watch_our_logs() -> Iterator[None]:
    handler = _OurLogs(level=logging.DEBUG)
    logging.getLogger().addHandler(handler)
    for name in _OUR_PACKAGES:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    yield
    logging.getLogger().removeHandler(handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = [line for line in _OUR_LINES if redact(line) != line]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "our-logs.txt").write_text("\n".join(_OUR_LINES) + "\n", encoding="utf-8")
    if leaks:
        print(f"\n{len(leaks)} log lines of ours hold a phone number or e-mail address "
              f"(test-artifacts/our-logs.txt), e.g.:\n  " + "\n  ".join(leaks[:5]))
        session.exitstatus = 1
