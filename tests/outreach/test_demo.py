"""`outreach demo`: the embedded default runs with no servers and writes valid Communications."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector.client import FhirClient
from connector.consent import OUTREACH_CATEGORY
from connector.errors import FhirPreconditionFailed, FhirUnsupported
from outreach.cli import app
from outreach.core.settings import load_settings
from outreach.demo import DEMO_FIXTURES, Demo, run_demo
from outreach.intake.ingest import ingest
from tests.support.fhir_server import FhirTestServer

SENT = 18  # steps sent: the Communications with basedOn
# Each sent step, the 7 replies, the preference change, the waitlist offer and the 2 staff
# answers are Communications.
COMMUNICATIONS = SENT + 7 + 1 + 1 + 2


def _written(folder: Path, rtype: str) -> dict[str, dict[str, Any]]:
    lines = (folder / "writeback" / f"{rtype}.ndjson").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


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
    assert summary["sent"] == SENT and summary["Communication written back"] == COMMUNICATIONS
    assert summary["CommunicationRequest written back"] >= SENT
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


def test_demo_shows_a_patient_rebooking_by_reply_and_reminders_following(
        tmp_path: Path) -> None:
    out = io.StringIO()
    run_demo(tmp_path, out, load_settings(database_url="sqlite:///unused.db"))
    timeline = out.getvalue()
    assert "C: confirm, R: new time, X: cancel. Reply STOP to opt out." in timeline
    assert "REPLY by sms from +15555550106: “R”" in timeline
    assert "↳ reschedule (the step's reply key 'R'): new time requested; 3 times offered" \
        in timeline
    assert "We can offer 1) Mon 9 Mar 15:00, 2) Tue 10 Mar 11:00, 3) Wed 11 Mar 09:30. Reply " \
        "with the number of the time you want, or choose at http://localhost:8000/o/" in timeline
    assert "↳ answer to the reschedule offer: rebooked (option 2)" in timeline
    assert "You are booked for Tuesday 10 March at 11:00. Thank you." in timeline
    # Intake followed the new version: both reminders left come at the new time.
    for sent in ("Mon 2026-03-09 11:00 UTC  SENT sms: appointment-reminders/reminder-24h for "
                 "Patient/fay", "Tue 2026-03-10 09:00 UTC  SENT sms: "
                 "appointment-reminders/reminder-2h for Patient/fay"):
        assert sent in timeline
    assert "Fay, your appointment is on Monday 9 March" in timeline  # the 72 h one, before
    assert timeline.count("Fay, your appointment is on Tuesday 10 March at 11:00") == 2
    # In the EHR: the appointment in its new Slot, which is busy; the old one free again.
    fay = _written(tmp_path, "Appointment")["appt-fay"]
    assert (fay["start"], fay["slot"]) == ("2026-03-10T11:00:00.000Z",
                                           [{"reference": "Slot/lee-0310-1100"}])
    slots = _written(tmp_path, "Slot")
    assert (slots["lee-0310-1100"]["status"], slots["lee-0309-1000"]["status"]) == (
        "busy", "free")


def test_demo_shows_a_cancelled_time_booked_from_the_waitlist(tmp_path: Path) -> None:
    out = io.StringIO()
    run_demo(tmp_path, out, load_settings(database_url="sqlite:///unused.db"))
    timeline = out.getvalue()
    assert "Thu 2026-03-05 12:00 UTC  Slot/lee-0306-0900 v2 updated (status free" in timeline
    assert "waitlist-backfill: enroll (trigger matched: status booked → cancelled)" in timeline
    # Gus has waited since February, Eve since the 23rd: Gus is asked, Eve is not.
    assert "Thu 2026-03-05 12:00 UTC  OFFERED sms: waitlist-backfill for Patient/gus " \
        "(Appointment/wait-gus), longest waiting first: the time Appointment/appt-chloe gave " \
        "back, 2026-03-06 09:00 UTC" in timeline
    assert "is free on Friday 6 March at 09:00. Reply YES within 2 hours to " \
        "take it" in timeline
    assert "Patient/eve (Appointment/wait-eve)" not in timeline
    assert "REPLY by sms from +15555550107: “YES”" in timeline
    assert "↳ answer to the waitlist offer: waitlist time booked" in timeline
    assert "SENT sms: appointment-reminders/booked for Patient/gus (Appointment/wait-gus)" \
        in timeline
    gus = _written(tmp_path, "Appointment")["wait-gus"]
    assert (gus["status"], gus["start"], gus["slot"]) == (
        "booked", "2026-03-06T09:00:00.000Z", [{"reference": "Slot/lee-0306-0900"}])
    assert _written(tmp_path, "Slot")["lee-0306-0900"]["status"] == "busy"
    assert "cancellations backfilled: 1 of 1" in timeline  # the outcome report still prints


def test_the_demo_ehr_updates_and_searches_as_a_fhir_server_does(tmp_path: Path) -> None:
    demo = Demo(tmp_path, io.StringIO(), load_settings(database_url="sqlite:///unused.db"))
    try:
        for name in ("09-slot-lee-0310-1100-v1-free.json", "09-slot-lee-0311-0930-v1-free.json",
                     "09-slot-lee-0309-1000-v1-busy.json"):
            ingest(demo.rt, json.loads((DEMO_FIXTURES / name).read_text()), source="test")
        free = {"schedule": "Schedule/dr-lee", "status": "free", "_sort": "start",
                "start": ["ge2026-03-10T00:00:00Z", "lt2026-03-12T00:00:00Z"]}
        assert [s["id"] for s in demo.sink.search("Slot", free)] == [
            "lee-0310-1100", "lee-0311-0930"]
        slot = demo.sink.read("Slot", "lee-0310-1100")
        busy = demo.sink.update({**slot, "status": "busy"}, if_match='W/"1"')
        assert busy["meta"]["versionId"] == "2"
        assert demo.sink.read("Slot", "lee-0310-1100")["status"] == "busy"
        assert [s["id"] for s in demo.sink.search("Slot", free)] == ["lee-0311-0930"]
        with pytest.raises(FhirPreconditionFailed):
            demo.sink.update({**slot, "status": "free"}, if_match='W/"1"')
        with pytest.raises(FhirUnsupported):  # never ignored, which would widen the result
            list(demo.sink.search("Slot", {"schedule": "Schedule/dr-lee", "comment": "x"}))
    finally:
        demo.rt.engine.dispose()


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


def test_demo_shows_a_clinician_answering_and_closing_tasks(tmp_path: Path) -> None:
    out = io.StringIO()
    run_demo(tmp_path, out, load_settings(database_url="sqlite:///unused.db"))
    timeline = out.getvalue()
    assert "Thu 2026-03-05 15:30 UTC  STAFF Practitioner/dr-lee opens Patient/eve's outreach " \
           "view in the EHR (SMART)\n    ┌ sms to +15555550105\n    │ We are sorry your visit " \
           "fell short." in timeline
    assert "↳ marked done: Call the patient back within one business day" in timeline
    # The service-recovery Task closed four hours after the low score, not "open until now".
    assert "service recovery: 1 task opened, 0 open now, 1 closed; closed after 4.1 h" in timeline
    answers = [c for c in _written(tmp_path, "Communication").values()
               if c.get("sender", {}).get("reference") == "Practitioner/dr-lee"]
    assert sorted(c["subject"]["reference"] for c in answers) == ["Patient/chloe", "Patient/eve"]
    # Chloé's question was answered and its Task left open; Eve's service recovery is done.
    tasks = {t["for"]["reference"]: t["status"] for t in _written(tmp_path, "Task").values()}
    assert tasks == {"Patient/chloe": "requested", "Patient/eve": "completed"}


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
    assert len(communications) == COMMUNICATIONS
    others = [line for rtype in ("Task", "Consent", "QuestionnaireResponse", "Slot",
                                 "Appointment")
              for line in (folder / f"{rtype}.ndjson").read_text().splitlines()]
    with FhirClient(fhir.base_url) as client:
        for file in sorted(DEMO_FIXTURES.glob("*.json")):  # the resources they point at
            resource = json.loads(file.read_text())
            client.update({k: v for k, v in resource.items() if k != "meta"})
        for line in requests + communications + others:
            resource = {k: v for k, v in json.loads(line).items() if k != "meta"}
            stored = client.update(resource)  # raises on a validation error
            assert stored["id"] == resource["id"]
        sent = [c for c in client.search("Communication", {"_count": 50}) if "basedOn" in c]
        assert len(sent) == SENT and {c["status"] for c in sent} == {"completed"}
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
