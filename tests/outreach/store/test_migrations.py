"""The same migrations serve SQLite and Postgres; services refuse an out-of-date schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from outreach.cli import app
from outreach.core.settings import get_settings
from outreach.store.db import make_engine
from outreach.store.migrate import (
    SchemaOutOfDate,
    current_revision,
    head_revision,
    require_current,
    upgrade,
)
from outreach.store.models import Base

TABLES = {t.name for t in Base.metadata.sorted_tables}


def test_fresh_sqlite_file_migrates_to_head(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'outreach.db'}")
    with pytest.raises(SchemaOutOfDate, match="outreach migrate"):
        require_current(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES
    upgrade(engine)  # idempotent
    require_current(engine)


def test_postgres_database_is_at_head(pg_url: str) -> None:
    engine = make_engine(pg_url)
    assert current_revision(engine) == head_revision()
    indexes = {i["name"] for i in inspect(engine).get_indexes("scheduled_steps")}
    assert "ix_scheduled_steps_due" in indexes


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    db = tmp_path / "outreach.db"
    monkeypatch.setenv("OUTREACH_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("OUTREACH_WEBHOOK_SECRET", "s" * 24)
    monkeypatch.setenv("OUTREACH_BROKER_URL", "redis://127.0.0.1:6379/15")
    get_settings.cache_clear()
    yield db
    get_settings.cache_clear()


def test_serve_and_worker_refuse_an_unmigrated_database(env: Path) -> None:
    runner = CliRunner()
    for command in (["serve"], ["worker"], ["beat"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "run `outreach migrate` first" in result.output
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0 and "revision" in result.output
    assert current_revision(make_engine(f"sqlite:///{env}")) == head_revision()


def test_bad_setting_stops_with_the_variable_named(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTREACH_SMTP_PORT", "not-a-port")
    monkeypatch.setenv("OUTREACH_TIMEZONE", "Mars/Olympus")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert "OUTREACH_SMTP_PORT" in result.output
    assert "OUTREACH_TIMEZONE: unknown IANA time zone 'Mars/Olympus'" in result.output


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_migration_downgrades_and_upgrades_again(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command

    from outreach.store.migrate import alembic_config

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
        upgrade(make_engine(url))
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES
