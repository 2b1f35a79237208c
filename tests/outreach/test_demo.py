"""`outreach demo`: the embedded default runs with no servers and writes valid Communications."""

from __future__ import annotations

import io
import json
from pathlib import Path

from typer.testing import CliRunner

from connector.client import FhirClient
from outreach.cli import app
from outreach.demo import DEMO_FIXTURES, run_demo
from outreach.settings import load_settings
from tests.support.fhir_server import FhirTestServer


def test_demo_timeline_shows_what_each_patient_gets(tmp_path: Path) -> None:
    out = io.StringIO()
    summary = run_demo(tmp_path, out, load_settings(database_url="sqlite:///unused.db"))
    timeline = out.getvalue()
    assert "Appointment/appt-ana v1 delivered again: duplicate, ignored" in timeline
    assert "appointment-reminders: replan (anchor moved)" in timeline
    assert "appointment-reminders: cancel (cancel_when matched" in timeline
    assert "Su cita del lunes 9 de marzo a las 14:00 está reservada" in timeline  # Spanish
    assert "Tue 2026-03-03 08:00 UTC  SENT sms: appointment-reminders/booked for Patient/chloe" \
        in timeline  # booked at 22:40: quiet hours delay it to 08:00
    assert "SKIPPED appointment-reminders/booked for Patient/dan" in timeline  # landline only
    assert summary["sent"] == 11 and summary["written back"] == 11
    assert summary["cancelled"] == 1


def test_demo_communications_are_accepted_by_a_fhir_server(
    tmp_path: Path, fhir: FhirTestServer
) -> None:
    run_demo(tmp_path, io.StringIO(), load_settings())
    lines = (tmp_path / "communications.ndjson").read_text().splitlines()
    assert len(lines) == 11
    with FhirClient(fhir.base_url) as client:
        for file in sorted(DEMO_FIXTURES.glob("*.json")):  # the resources they point at
            resource = json.loads(file.read_text())
            client.update({k: v for k, v in resource.items() if k != "meta"})
        for line in lines:
            communication = json.loads(line)
            communication.pop("id")
            stored, created = client.create(communication)  # raises on a validation error
            assert created and stored["status"] == "completed"
        assert len(list(client.search("Communication", {"_count": 50}))) == 11


def test_demo_command_says_where_it_wrote(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"Communications written back (NDJSON): {tmp_path / 'communications.ndjson'}" \
        in result.output
    assert (tmp_path / "communications.ndjson").stat().st_size > 0
