"""Journeys that load but could never work are rejected with the offending key's position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rules
from outreach.cli import app
from rules.schema import json_schema
from tests.rules.test_loader import TEXT, edited, errors_for, position

SCHEMA_FILE = Path(rules.__file__).parent / "journey.schema.json"


def test_on_empty_can_never_fire(tmp_path: Path) -> None:
    text = edited("on: [created, updated]", "on: []")
    (error,) = errors_for(tmp_path, text)
    line, col = position(text, "[]")
    assert error.startswith(f"{line}:{col}: trigger.on: ")
    assert "can never fire" in error


def test_on_only_deleted_can_never_fire(tmp_path: Path) -> None:
    text = edited("on: [created, updated]", "on: [deleted]")
    (error,) = errors_for(tmp_path, text)
    line, col = position(text, "[deleted]")
    assert error == (f"{line}:{col}: trigger.on lists only `deleted`: a deleted resource is "
                     "never enrolled, so the journey can never fire")


@pytest.mark.parametrize("when", ["false", "1 > 2", "true and false", "{}"])
def test_a_when_that_is_always_false_can_never_fire(tmp_path: Path, when: str) -> None:
    text = edited("\"status = 'booked' and start > now()\"", f'"{when}"')
    (error,) = errors_for(tmp_path, text)
    line, col = position(text, f'"{when}"')
    assert error == f"{line}:{col}: trigger.when is always false: the journey can never fire"


def test_cancel_when_always_true_is_rejected(tmp_path: Path) -> None:
    text = edited("\"status in ('cancelled' | 'noshow' | 'entered-in-error')\"", "'true'")
    (error,) = errors_for(tmp_path, text)
    assert "cancel_when is always true" in error


def test_unknown_status_code_points_at_the_code(tmp_path: Path) -> None:
    text = edited("on: [created, updated]", "on: [{status: {from: booked, to: canceled}}]")
    (error,) = errors_for(tmp_path, text)
    line, col = position(text, "canceled")
    assert error.startswith(f"{line}:{col}: trigger.on.0.status.to: 'canceled' is not an "
                            "Appointment status") or error.startswith(
        f"{line}:{col}: trigger.on.0.status.to: 'canceled' is not a Appointment status")


def test_a_status_change_to_itself_can_never_happen(tmp_path: Path) -> None:
    text = edited("on: [created, updated]", "on: [{status: {from: booked, to: booked}}]")
    (error,) = errors_for(tmp_path, text)
    assert "from and to are the same status" in error


def test_an_unknown_change_kind_points_at_it(tmp_path: Path) -> None:
    text = edited("on: [created, updated]", "on: [created, moved]")
    (error,) = errors_for(tmp_path, text)
    line, col = position(text, "moved")
    assert error.startswith(f"{line}:{col}: trigger.on.1: ")


def test_a_step_before_a_trigger_time_anchor_is_always_too_late(tmp_path: Path) -> None:
    text = edited("anchor: start", "anchor: trigger")
    errors = errors_for(tmp_path, text)
    assert len(errors) == 3  # -72h, -24h, -2h
    line, col = position(text, "at: -72h")
    col += len("at: ")
    assert errors[0].startswith(f"{line}:{col}: steps.1.at: '-72h' is before the anchor")


def test_replies_need_an_sms_channel(tmp_path: Path) -> None:
    text = edited("channel: [sms, email]", "channel: [email]")
    (error,) = errors_for(tmp_path, text)
    assert "replies arrive by SMS" in error


def test_unknown_reply_action_is_rejected(tmp_path: Path) -> None:
    text = edited("replies: {C: confirm,", "replies: {C: confrim,")
    (error,) = errors_for(tmp_path, text)
    line, col = position(text, "confrim")
    assert error.startswith(f"{line}:{col}: steps.1.replies.C: ")


def test_scheduled_trigger_with_a_bad_cron_points_at_the_schedule(tmp_path: Path) -> None:
    text = (
        "journey: birthday\n"
        "trigger:\n"
        "  schedule: \"0 25 * * *\"\n"
        "  search: Patient?active=true\n"
        "steps:\n"
        "  - {id: greet, at: immediately, channel: sms, template: birthday-greeting}\n"
    )
    (error,) = errors_for(tmp_path, text)
    line, col = position(text, '"0 25')
    assert error.startswith(f"{line}:{col}: trigger.schedule: hour: ")


def test_scheduled_trigger_cannot_have_on(tmp_path: Path) -> None:
    text = (
        "journey: birthday\n"
        "trigger:\n"
        "  schedule: \"0 9 * * *\"\n"
        "  search: Patient?active=true\n"
        "  on: [created]\n"
        "steps:\n"
        "  - {id: greet, at: immediately, channel: sms, template: birthday-greeting}\n"
    )
    (error,) = errors_for(tmp_path, text)
    assert "a scheduled trigger has no `on`" in error


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    text = edited("on: [created, updated]", "on: [deleted]")
    text = edited("id: reminder-24h", "id: reminder-72h", text)
    text = edited("template: appointment-booked", "template: nope", text)
    errors = errors_for(tmp_path, text, templates=["appointment-reminder"])
    assert len(errors) == 3
    lines = [int(e.split(":")[0]) for e in errors]
    assert lines == sorted(lines)


def test_committed_json_schema_is_current() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    hint = "run: uv run outreach rules schema > rules/journey.schema.json"
    assert committed == json_schema(), hint


def test_rules_schema_command_prints_the_schema() -> None:
    result = CliRunner().invoke(app, ["rules", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "fhir-outreach journey"
    assert "trigger" in schema["properties"] and "Step" in schema["$defs"]


def test_rules_check_prints_every_problem_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(edited("on: [created, updated]", "on: [deleted]"))
    (tmp_path / "b.yaml").write_text(
        edited("journey: appointment-reminders", "journey: b", TEXT).replace("-72h", "-72x")
        .replace("id: reminder-24h", "id: reminder-2h"))
    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 2  # b: the schema error stops before semantic checks
    assert any("a.yaml" in line and "can never fire" in line for line in lines)
    assert any("b.yaml" in line and "bad offset" in line for line in lines)
