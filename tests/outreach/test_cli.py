"""The promised CLI commands against real parts (FHIR server, Postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.client import FhirClient
from outreach import SHIPPED_JOURNEYS, runtime
from outreach.broker.app import celery_app
from outreach.cli import app
from outreach.core.settings import get_settings
from tests.conftest import WEBHOOK_SECRET
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pg_url: str, fhir: FhirTestServer) -> Iterator[None]:
    monkeypatch.setenv("OUTREACH_DATABASE_URL", pg_url)
    monkeypatch.setenv("OUTREACH_FHIR_BASE_URL", fhir.base_url)
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", "http://127.0.0.1:9/outreach")
    monkeypatch.setenv("OUTREACH_WEBHOOK_SECRET", WEBHOOK_SECRET)
    get_settings.cache_clear()
    runtime.install(None)
    yield
    runtime.install(None)
    get_settings.cache_clear()


def test_subscriptions_ensure_then_status(env: None, fhir: FhirTestServer) -> None:
    status = runner.invoke(app, ["subscriptions", "status"])
    assert status.exit_code == 1 and "missing" in status.output

    ensured = runner.invoke(app, ["subscriptions", "ensure"])
    assert ensured.exit_code == 0, ensured.output
    assert "Appointment" in ensured.output and "created" in ensured.output
    again = runner.invoke(app, ["subscriptions", "ensure"])
    assert "unchanged" in again.output

    with FhirClient(fhir.base_url) as client:
        (sub,) = client.search("Subscription")
    assert sub["criteria"] == "Appointment?"  # no status filter: cancellations must notify
    assert sub["channel"]["endpoint"] == "http://127.0.0.1:9/outreach/fhir/notify"
    assert sub["channel"]["header"] == [f"X-Outreach-Secret: {WEBHOOK_SECRET}"]

    status = runner.invoke(app, ["subscriptions", "status"])
    assert status.exit_code == 0 and "active" in status.output


TOPIC = "http://hospital.example/topics/appointment-change"


def test_ensure_subscribes_to_an_advertised_topic_and_status_shows_it(
        env: None, fhir: FhirTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fhir.features(topics=[TOPIC])
    monkeypatch.setenv("OUTREACH_SUBSCRIPTION_TOPICS", f"Appointment={TOPIC}")
    get_settings.cache_clear()
    ensured = runner.invoke(app, ["subscriptions", "ensure"])
    assert ensured.exit_code == 0, ensured.output
    assert "topic-based" in ensured.output and "created" in ensured.output
    with FhirClient(fhir.base_url) as client:
        (sub,) = client.search("Subscription")
    assert sub["criteria"] == TOPIC
    assert sub["_criteria"]["extension"][0]["valueString"] == "Appointment?"
    again = runner.invoke(app, ["subscriptions", "ensure"])
    assert "unchanged" in again.output
    status = runner.invoke(app, ["subscriptions", "status"])
    assert status.exit_code == 0 and "topic-based" in status.output


def test_a_topic_the_ehr_does_not_advertise_falls_back_to_rest_hook(
        env: None, fhir: FhirTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SUBSCRIPTION_TOPICS", f"Appointment={TOPIC}")
    get_settings.cache_clear()
    ensured = runner.invoke(app, ["subscriptions", "ensure"])
    assert ensured.exit_code == 0, ensured.output
    assert "is not advertised by the EHR; rest-hook instead" in ensured.output
    with FhirClient(fhir.base_url) as client:
        (sub,) = client.search("Subscription")
    assert sub["criteria"] == "Appointment?"


def test_poll_once_processes_new_versions(env: None, fhir: FhirTestServer) -> None:
    with FhirClient(fhir.base_url) as client:
        client.create(appointment("Patient/p1", datetime.now(UTC) + timedelta(days=3)))
    first = runner.invoke(app, ["poll", "--once"])
    assert first.exit_code == 0, first.output
    assert "Appointment: 1 new versions processed" in first.output
    assert "Appointment: 0 new versions processed" in runner.invoke(app, ["poll", "--once"]).output


def test_rules_check_reports_positions_and_exit_codes(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["rules", "check", "rules/journeys"])
    assert ok.exit_code == 0 and "appointment-reminders" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("journey: x\ntrigger:\n  resource: Appointment\n  colour: red\nsteps: []\n")
    result = runner.invoke(app, ["rules", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:4:3: unknown key 'trigger.colour'" in result.output
    assert f"{bad}:5:8: steps:" in result.output  # every problem, not just the first


def test_beat_schedules_the_sweeper_and_the_poller() -> None:
    celery_app.loader.import_default_modules()  # the `include` modules, as a worker does
    schedule = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert schedule >= {"outreach.sweep", "outreach.poll", "outreach.run_campaigns"}
    assert schedule <= set(celery_app.tasks)
    assert celery_app.conf.task_acks_late and celery_app.conf.worker_prefetch_multiplier == 1


def test_rules_check_lints_the_templates_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from channels.templates import SHIPPED

    templates = tmp_path / "templates"
    shutil.copytree(SHIPPED, templates)
    (templates / "en" / "appointment-booked.yaml").write_text(
        "sms: Your {{ reason }} visit on {{ when }}.\nemail_subject: x\nemail_text: x\n")
    monkeypatch.setenv("OUTREACH_TEMPLATES_DIR", str(templates))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["rules", "check", "rules/journeys"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "appointment-booked.yaml:1:1: sms uses 'reason'" in result.output
    assert "opt out" in result.output


def test_rules_check_names_a_template_that_is_not_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A text with ': ' left unquoted: file:line:col and exit 1, no traceback."""
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "greeting.yaml").write_text("sms: Hi {{ first_name }}: welcome\n")
    monkeypatch.setenv("OUTREACH_TEMPLATES_DIR", str(tmp_path))
    get_settings.cache_clear()
    result = runner.invoke(app, ["rules", "check", str(SHIPPED_JOURNEYS)])
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert f"{tmp_path / 'en' / 'greeting.yaml'}:1:" in result.output
    assert "Traceback" not in result.output


def test_rules_check_takes_several_paths_and_reports_each(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("journey: x\ntrigger:\n  resource: Appointment\n")
    reminders = SHIPPED_JOURNEYS / "appointment-reminders.yaml"
    good = runner.invoke(app, ["rules", "check", str(reminders), str(SHIPPED_JOURNEYS / "library")])
    assert good.exit_code == 0
    assert "ok  " in good.output and "waitlist-backfill" in good.output
    assert "appointment-reminders" in good.output
    both = runner.invoke(app, ["rules", "check", str(SHIPPED_JOURNEYS / "library"), str(bad),
                               str(tmp_path / "missing")])
    assert both.exit_code == 1
    assert f"{bad}:1:1: steps:" in both.output and f"{tmp_path / 'missing'}:1:1:" in both.output
