"""`outreach demo`: the embedded default runs with no servers and writes valid Communications."""

from __future__ import annotations

import io
import json
from pathlib import Path

from typer.testing import CliRunner

from connector.client import FhirClient
from connector.consent import OUTREACH_CATEGORY
from outreach.cli import app
from outreach.core.settings import load_settings
from outreach.demo import DEMO_FIXTURES, run_demo
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
    # 4 replies and 1 preference change are Communications too.
    assert summary["sent"] == 12 and summary["Communication written back"] == 12 + 4 + 1
    assert summary["CommunicationRequest written back"] >= 12
    assert summary["cancelled"] == 1


def test_demo_shows_replies_read_in_the_patients_words(tmp_path: Path) -> None:
    out = io.StringIO()
    summary = run_demo(tmp_path, out, load_settings(database_url="sqlite:///unused.db"))
    timeline = out.getvalue()
    assert "↳ text (no rule matched: free text for staff): staff task" in timeline
    assert "↳ confirm (confirm phrase 'ahi estare'): Appointment/appt-ana confirmed in the EHR" \
        in timeline
    assert "↳ answered: “Gracias, su cita está confirmada.”" in timeline
    assert "↳ stop (opt-out phrase 'no me envien mas'): opted out" in timeline
    # Opted out of SMS: her last reminder goes by email.
    assert "Mon 2026-03-09 12:00 UTC  SENT email: appointment-reminders/reminder-2h for " \
        "Patient/ana" in timeline
    # Ana's STOP and Chloe's campaigns opt-out on the preference page; Chloé's question and
    # Eve's low score are Tasks for staff.
    assert (summary["Consent written back"], summary["Task written back"]) == (2, 2)


def test_demo_shows_a_survey_and_its_service_recovery(tmp_path: Path) -> None:
    out = io.StringIO()
    summary = run_demo(tmp_path, out, load_settings(database_url="sqlite:///unused.db"))
    timeline = out.getvalue()
    assert "satisfaction-survey: enroll (trigger matched: status new → finished)" in timeline
    assert "SENT sms: satisfaction-survey/survey for Patient/eve (Encounter/enc-eve)" in timeline
    assert "REPLY by sms from +15555550105: “2”" in timeline
    assert "We are sorry your visit did not go well, Eve." in timeline
    assert "surveys: 1 answer, NPS-style -100.0, 1 service-recovery task" in timeline
    assert summary["QuestionnaireResponse written back"] == 1


def test_demo_shows_a_preference_change_taking_effect(tmp_path: Path) -> None:
    out = io.StringIO()
    run_demo(tmp_path, out, load_settings(database_url="sqlite:///unused.db"))
    timeline = out.getvalue()
    # The booking message carries the signed link; the patient's own quiet hours then hold back
    # the 09:00 reminder to 09:30.
    assert "Message preferences: http://localhost:8000/p/" in timeline
    assert "PREFERENCES saved by Patient/chloe from the link in a message" in timeline
    assert "quiet hours 20:00–09:30; opted out of: campaigns" in timeline
    assert "Tue 2026-03-03 09:00 UTC  SCHEDULED appointment-reminders/reminder-72h for " \
        "Patient/chloe (Appointment/appt-chloe): quiet hours: deferred" in timeline
    assert "Tue 2026-03-03 09:30 UTC  SENT sms: appointment-reminders/reminder-72h for " \
        "Patient/chloe" in timeline


def test_demo_write_back_is_accepted_by_a_fhir_server(
    tmp_path: Path, fhir: FhirTestServer
) -> None:
    run_demo(tmp_path, io.StringIO(), load_settings())
    folder = tmp_path / "writeback"
    communications = (folder / "Communication.ndjson").read_text().splitlines()
    requests = (folder / "CommunicationRequest.ndjson").read_text().splitlines()
    assert len(communications) == 12 + 4 + 1
    others = [line for rtype in ("Task", "Consent", "QuestionnaireResponse")
              for line in (folder / f"{rtype}.ndjson").read_text().splitlines()]
    with FhirClient(fhir.base_url) as client:
        for file in sorted(DEMO_FIXTURES.glob("*.json")):  # the resources they point at
            resource = json.loads(file.read_text())
            client.update({k: v for k, v in resource.items() if k != "meta"})
        for line in requests + communications + others:
            resource = json.loads(line)
            stored = client.update(resource)  # raises on a validation error
            assert stored["id"] == resource["id"]
        sent = [c for c in client.search("Communication", {"_count": 50}) if "basedOn" in c]
        assert len(sent) == 12 and {c["status"] for c in sent} == {"completed"}
        assert all(c["basedOn"][0]["identifier"]["value"].startswith("request-") for c in sent)
        (consent,) = client.search("Consent", {"patient": "Patient/ana"})
        assert consent["provision"]["type"] == "deny"
        (campaigns,) = client.search("Consent", {"patient": "Patient/chloe"})
        assert campaigns["provision"]["type"] == "deny"
        coding = campaigns["category"][1]["coding"]
        assert {"system": OUTREACH_CATEGORY, "code": "campaigns"} in coding
        statuses = {r["status"] for r in client.search("CommunicationRequest", {"_count": 50})}
        assert statuses == {"completed", "revoked"}


def test_demo_command_says_where_it_wrote(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "writeback" / "Communication.ndjson") in result.output
    assert (tmp_path / "writeback" / "Communication.ndjson").stat().st_size > 0
