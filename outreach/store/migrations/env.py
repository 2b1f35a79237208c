"""Alembic environment: the URL comes from the caller (outreach migrate) or from settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from outreach.store.db import make_engine
from outreach.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from outreach.core.settings import get_settings

        url = get_settings().database_url
    with make_engine(url).connect() as conn:
        _run(conn)


run()
