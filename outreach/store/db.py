"""Engines and sessions; SQLite gets WAL and a busy timeout so a worker and the API can share it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False},
                               hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # hide_parameters: a database error's message never carries the bound values (phone
    # numbers, message bodies) into a log. pool_recycle: a connection a firewall or the server
    # may have dropped meanwhile is not kept for hours.
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800,
                           hide_parameters=True)
    event.listen(engine.pool, "checkin", _stamp_checkin)
    event.listen(engine.pool, "checkout", _ping_if_idle(engine))
    return engine


# A connection back in use within this long was open against the server now running: a
# Postgres restart takes longer (and a statement that still meets a dropped connection has
# SQLAlchemy discard every pooled connection older than it). Busy workers check connections
# out every few milliseconds, so they pay no ping; one idle longer is pinged at checkout.
PING_AFTER_IDLE = 1.0  # seconds


def _stamp_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Callable[[Any, Any, Any], None]:
    def ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get("checked_in")
        if checked_in is None or time.monotonic() - checked_in < PING_AFTER_IDLE:
            return  # just connected, or just used
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another (a fresh one if need be).
            raise DisconnectionError("connection dropped while idle in the pool") from exc
    return ping


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def relax_durability(session: Session) -> None:
    """For a transaction whose loss in a crash only means redoing idempotent work (marking a
    write-back done): skip the WAL flush wait on Postgres."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with factory() as session, session.begin():
        yield session


_HELD = threading.local()  # the autocommit connection `holding_reads` keeps for this thread


@contextmanager
def reads(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A connection for reads that need no transaction around them (one statement, or several
    that may each see the latest commit): on Postgres in autocommit, so no BEGIN before them and
    no ROLLBACK after, two round trips of the three a one-statement read would cost. Inside
    `holding_reads` on the same engine, the connection held there."""
    engine: Engine = factory.kw["bind"]
    held: Connection | None = getattr(_HELD, "connection", None)
    if held is not None and held.engine is engine:
        yield held
        return
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


@contextmanager
def holding_reads(factory: sessionmaker[Session]) -> Iterator[None]:
    """`reads` in this thread share one connection until the block ends: a step's check and
    reservation take it from the pool once, not once each (a checkout, its autocommit switch and
    its return cost more than a short statement). Not held across a provider call: a slow
    provider would hold the pool. Postgres only: a SQLite connection held would keep other
    writers waiting."""
    engine: Engine = factory.kw["bind"]
    if engine.dialect.name != "postgresql" or getattr(_HELD, "connection", None) is not None:
        yield
        return
    with reads(factory) as connection:
        _HELD.connection = connection
        try:
            yield
        finally:
            _HELD.connection = None


def flushed_connection(session: Session) -> Connection:
    """The session's connection, its pending changes flushed first as a query through the
    session would autoflush them: built-once Core statements run on it without the ORM's
    per-statement work, and still see what the session added."""
    if session.autoflush:
        session.flush()
    return session.connection()
