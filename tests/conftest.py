"""Shared fixtures: real Postgres, Redis, SMTP, the Medplum FHIR server, Celery and the API."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from outreach import runtime
from outreach.clock import Clock
from outreach.demo import CollectingEnqueuer
from outreach.runtime import Enqueuer, Runtime, build_runtime
from outreach.settings import Settings, load_settings
from outreach.store.db import make_engine
from outreach.store.migrate import upgrade
from outreach.store.models import Base
from tests.support.fhir_server import FhirTestServer, fhir_server_session
from tests.support.smtp import SmtpServer, free_port

PG_ADMIN_URL = os.environ.get(
    "OUTREACH_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("OUTREACH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
WEBHOOK_SECRET = "test-secret-" + "x" * 8


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throw-away Postgres database, migrated with the real Alembic migrations."""
    name = f"outreach_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session database, emptied before each test."""
    engine = make_engine(pg_database)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_database


@pytest.fixture
def redis_url() -> str:
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


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
        rt = build_runtime(settings, enqueue=enqueue or CollectingEnqueuer())
        if clock is not None:
            rt.clock = clock
        runtime.install(rt)
        built.append(rt)
        return rt

    yield factory
    runtime.install(None)
    for rt in built:
        if rt.fhir is not None:
            rt.fhir.close()
        rt.engine.dispose()


def settings_for(rt: Runtime, **changes: Any) -> Settings:
    return load_settings(**{**rt.settings.model_dump(), **changes})


class ApiServer:
    """The real FastAPI app under uvicorn, in a thread, on a free loopback port."""

    def __init__(self) -> None:
        from outreach.api.app import create_app

        self.port = free_port()
        config = uvicorn.Config(create_app(), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("API server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


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
