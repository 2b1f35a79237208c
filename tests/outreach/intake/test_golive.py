"""`outreach ehr check` and capability-aware `subscriptions ensure|status`, against the real
FHIR server as HAPI-like, Epic-like (no Subscription, no `_lastUpdated`), silent and down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from outreach import SHIPPED_JOURNEYS, runtime
from outreach.cli import app
from outreach.core.settings import get_settings
from tests.conftest import WEBHOOK_SECRET
from tests.support.fhir_server import FhirTestServer

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pg_url: str, fhir: FhirTestServer) -> Iterator[None]:
    monkeypatch.setenv("OUTREACH_DATABASE_URL", pg_url)
    monkeypatch.setenv("OUTREACH_FHIR_BASE_URL", fhir.base_url)
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", "http://127.0.0.1:9/outreach")
    monkeypatch.setenv("OUTREACH_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("OUTREACH_FHIR_RETRY_ATTEMPTS", "1")
    get_settings.cache_clear()
    runtime.install(None)
    yield
    runtime.install(None)
    get_settings.cache_clear()


def _check() -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["ehr", "check", "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def _find(report: dict[str, Any], area: str, subject: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["area"] == area and f["subject"] == subject]


def test_check_on_a_hapi_like_server_is_ready_with_push_and_polling(env: None) -> None:
    code, report = _check()
    assert code == 0 and report["ready"] is True
    push, poll = _find(report, "changes", "Appointment")
    assert push["result"] == "rest-hook" and "Subscription create listed" in push["reason"]
    assert poll["result"] == "polling by _lastUpdated"
    assert "Appointment search-type lists _lastUpdated" in poll["reason"]
    assert "probe: GET Appointment?_lastUpdated=gt" in poll["reason"]
    assert poll["reason"].endswith("→ 200")
    (comm,) = _find(report, "write-back", "Communication")
    assert comm["result"] == "written to the EHR"

    table = runner.invoke(app, ["ehr", "check"])
    assert table.exit_code == 0
    assert "READY" in table.stdout and "polling by _lastUpdated" in table.stdout


def test_check_on_an_epic_like_server_polls_by_date_window(
    env: None, fhir: FhirTestServer,
) -> None:
    fhir.epic_like()
    code, report = _check()
    assert code == 0, report
    push, poll = _find(report, "changes", "Appointment")
    assert push["result"] == "no push" and "no Subscription resource" in push["reason"]
    assert poll["result"] == "polling by date window"
    assert "lists date" in poll["reason"] and "_lastUpdated" not in poll["reason"]


def test_check_fails_with_what_is_missing_when_no_change_can_arrive(
    env: None, fhir: FhirTestServer,
) -> None:
    fhir.features(without_search_params=["_lastUpdated", "date"],
                  without_resources=["Subscription"])
    result = runner.invoke(app, ["ehr", "check"])
    assert result.exit_code == 1
    assert "NOT READY, missing: changes Appointment" in result.stdout


def test_check_on_a_silent_statement_probes_instead_of_refusing(
    env: None, fhir: FhirTestServer,
) -> None:
    fhir.features(silent_metadata=True, without_search_params=["_lastUpdated"])
    code, report = _check()
    assert code == 0, report
    push, poll = _find(report, "changes", "Appointment")
    assert push["result"] == "rest-hook" and "probe: GET Subscription" in push["reason"]
    # _lastUpdated was tried and refused by the EHR; the date window answered.
    assert poll["result"] == "polling by date window"
    assert "_lastUpdated=gt" in poll["reason"] and "→ 400" in poll["reason"]
    (comm,) = _find(report, "write-back", "Communication")
    assert comm["status"] == "unknown"


def test_check_on_an_ehr_that_is_down_exits_2_with_a_message(
    env: None, fhir: FhirTestServer,
) -> None:
    fhir.outage(503)
    result = runner.invoke(app, ["ehr", "check"])
    assert result.exit_code == 2
    assert "cannot be reached" in result.stderr and "Traceback" not in result.output


def test_ensure_on_an_epic_like_server_says_polling_only(
    env: None, fhir: FhirTestServer,
) -> None:
    fhir.epic_like()
    for command in ("ensure", "status"):
        result = runner.invoke(app, ["subscriptions", command])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("polling only: CapabilityStatement: no Subscription")


def test_ensure_on_a_silent_statement_tries_rest_hook(env: None, fhir: FhirTestServer) -> None:
    fhir.features(silent_metadata=True)
    result = runner.invoke(app, ["subscriptions", "ensure"])
    assert result.exit_code == 0, result.output
    assert "Appointment" in result.stdout and "created" in result.stdout


def test_ensure_on_a_silent_push_less_server_reports_what_failed(
    env: None, fhir: FhirTestServer,
) -> None:
    fhir.features(silent_metadata=True, without_resources=["Subscription"])
    for command in ("ensure", "status"):
        result = runner.invoke(app, ["subscriptions", command])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("polling only: the CapabilityStatement lists no "
                                        "resources and ")
        assert "400" in result.stdout


def test_ensure_that_fails_on_an_ehr_listing_subscription_exits_1(
    env: None, fhir: FhirTestServer,
) -> None:
    fhir.outage(403, after=1)  # metadata answers; the Subscription search is forbidden
    result = runner.invoke(app, ["subscriptions", "ensure"])
    assert result.exit_code == 1
    assert "creating or repairing a Subscription failed" in result.stderr


def test_a_campaign_whose_search_the_ehr_refuses_is_missing(
    env: None, fhir: FhirTestServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTREACH_RULES_DIR", str(SHIPPED_JOURNEYS / "library"))
    get_settings.cache_clear()
    code, report = _check()
    assert code == 0, report
    (birthday,) = _find(report, "campaign", "birthday-greeting: Patient")
    assert birthday["result"] == "search" and birthday["reason"] == (
        "probe: GET Patient?active=true → 200")

    fhir.features(without_search_params=["active"])
    runtime.install(None)
    code, report = _check()
    assert code == 1
    (birthday,) = _find(report, "campaign", "birthday-greeting: Patient")
    assert birthday["status"] == "FAIL" and "→ 400" in birthday["reason"]
