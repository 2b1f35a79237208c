"""Pooled Postgres connections: a busy process pays no ping per checkout, and a connection the
server dropped while it sat idle (a Postgres restart) is replaced, not handed out broken."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from outreach.store import db
from outreach.store.db import make_engine


def _drop_other_connections(url: str) -> None:
    """What a Postgres restart does to this database's pooled connections."""
    with make_engine(url).connect() as admin:
        admin.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        admin.commit()


def test_a_connection_dropped_while_idle_is_replaced_at_checkout(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with engine.connect() as connection:
        first = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    _drop_other_connections(pg_url)
    time.sleep(db.PING_AFTER_IDLE + 0.1)

    with engine.connect() as connection:  # no error: the dead one was pinged and discarded
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != first
    engine.dispose()


def test_a_connection_back_in_use_at_once_is_not_pinged(pg_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(pg_url)
    pings: list[object] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    for _ in range(20):
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    assert pings == []  # a busy worker's checkouts: no round trip before each
    time.sleep(db.PING_AFTER_IDLE + 0.1)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert len(pings) == 1
    engine.dispose()
