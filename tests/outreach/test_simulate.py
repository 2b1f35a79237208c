"""`outreach simulate`: the forecast for an export, through the real pipeline on a simulated
clock, with nothing sent anywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bench import simulate as bench_simulate
from outreach.cli import app
from outreach.core.settings import load_settings
from outreach.demo import DEMO_FIXTURES
from outreach.simulate import as_json, as_table, read_resources, simulate
from outreach.simulate_shards import partition
from rules.recipients import patient_reference

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "rules" / "journeys" / "library"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKYO = {"url": "http://hl7.org/fhir/StructureDefinition/timezone", "valueCode": "Asia/Tokyo"}


def demo_resources() -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted(DEMO_FIXTURES.glob("*.json"))]


def bundle(tmp_path: Path, resources: list[dict[str, Any]]) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": r} for r in resources]}))
    return path


def test_demo_export_forecasts_what_the_demo_sends(tmp_path: Path) -> None:
    forecast = simulate(ROOT / "rules" / "journeys", demo_resources(), NOW,
                        load_settings(database_url="sqlite:///unused.db"))
    by = {(r.patient, r.step): r for r in forecast.rows}
    assert forecast.notes == []
    assert by[("Patient/ana", "booked")].channel == "email"
    assert by[("Patient/ana", "reminder-72h")].due_utc == "2026-03-06T14:00+00:00"
    assert by[("Patient/ana", "reminder-72h")].channel == "sms"
    # Chloé cancels on Thursday: what was due before went out (the booking confirmation at
    # 08:00 after quiet hours, two reminders); only the reminder after the cancellation did not.
    assert [by[("Patient/chloe", s)].state for s in
            ("booked", "reminder-72h", "reminder-24h", "reminder-2h")] == [
        "sent", "sent", "sent", "cancelled"]
    assert by[("Patient/chloe", "booked")].due_utc == "2026-03-03T08:00+00:00"
    assert "no channel the recipient can receive" in (by[("Patient/dan", "booked")].why or "")
    assert by[("Patient/ben", "reminder-24h")].due_utc == "2026-03-09T16:00+00:00"  # moved
    summary = forecast.summary
    assert summary["messages"] == 15 == sum(r.state == "sent" for r in forecast.rows)
    assert summary["by_channel"] == {"email": 5, "sms": 10}
    assert summary["by_journey"] == {"appointment-reminders": 15}
    assert summary["by_day"]["2026-03-02"] == 4 and sum(summary["by_hour"].values()) == 15
    # One segment per SMS, but Ana's three Spanish reminders (C, R or X) take two each.
    assert summary["segments"] == 7 + 3 * 2
    assert summary["cost"]["amount"] == round(13 * 0.0083, 4)


def test_a_confirmation_held_by_quiet_hours_is_counted_as_deferred(tmp_path: Path) -> None:
    # Chloé books at 22:40: her confirmation waits for the end of quiet hours (08:00).
    resources = [r for r in demo_resources() if r.get("id") in ("chloe", "appt-chloe")]
    forecast = simulate(ROOT / "rules" / "journeys", resources, NOW, load_settings())
    booked = next(r for r in forecast.rows if r.step == "booked")
    assert booked.state == "sent" and booked.due_utc == "2026-03-03T08:00+00:00"
    assert forecast.summary["deferred"]["when planned"] == {"quiet hours": 1}


def test_patient_local_time_follows_the_timezone_extension(tmp_path: Path) -> None:
    resources = demo_resources()
    for r in resources:
        if r["resourceType"] == "Patient" and r["id"] == "ana":
            r["extension"] = [TOKYO]
    rows = simulate(ROOT / "rules" / "journeys", resources, NOW, load_settings()).rows
    row = next(r for r in rows if (r.patient, r.step) == ("Patient/ana", "reminder-2h"))
    assert row.due_local.endswith("JST")


def test_an_encounter_finishing_plans_the_follow_up_and_survey(tmp_path: Path) -> None:
    patient = {"resourceType": "Patient", "id": "eve", "birthDate": "1970-03-02",
               "active": True, "telecom": [{"system": "phone", "value": "+15555550199",
                                            "use": "mobile"}]}
    encounter = {"resourceType": "Encounter", "id": "enc1", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                           "code": "AMB"},
                 "subject": {"reference": "Patient/eve"},
                 "period": {"start": "2026-03-02T08:00:00Z", "end": "2026-03-02T08:30:00Z"}}
    forecast = simulate(LIBRARY, [patient, encounter], NOW, load_settings())
    steps = {(r.journey, r.step): r for r in forecast.rows}
    # The birthday greeting went at 09:00 and used the day's one text: the instructions are
    # planned for the next day, the survey past the week's three; the forecast counts both.
    assert steps[("birthday-greeting", "greeting")].due_utc == "2026-03-02T09:00+00:00"
    assert steps[("post-visit-follow-up", "instructions")].due_utc == "2026-03-03T10:30+00:00"
    assert steps[("post-visit-follow-up", "instructions")].state == "sent"
    assert forecast.summary["deferred"]["when planned"] == {"the frequency cap": 2}
    survey = steps[("satisfaction-survey", "survey")]
    assert survey.state == "scheduled"
    assert survey.why == "deferred by the frequency cap when planned"
    assert ("birthday-greeting", "greeting") in steps  # born on 03-02, the 09:00 tick ran
    assert any(n.startswith("campaign birthday-greeting") for n in forecast.notes)
    sends = [r for r in forecast.rows if r.state == "sent"]
    days = [r.due_local[:14] for r in sends if not r.step.startswith("greeting")]
    assert len(days) == len(set(days)), "at most one capped text per local day"


def _two_visits_one_afternoon() -> list[dict[str, Any]]:
    patient = {"resourceType": "Patient", "id": "eve", "active": True, "telecom": [
        {"system": "phone", "value": "+15555550199", "use": "mobile"}]}
    visits = [{"resourceType": "Appointment", "id": f"a{hour}", "status": "booked",
               "start": f"2026-03-09T{hour}:00:00Z", "end": f"2026-03-09T{hour}:30:00Z",
               "meta": {"versionId": "1", "lastUpdated": "2026-03-02T08:00:00Z"},
               "participant": [{"actor": {"reference": "Patient/eve"}, "status": "accepted"}]}
              for hour in (14, 16)]
    return [patient, *visits]


def test_the_text_caps_are_settings_and_simulate_shows_them(tmp_path: Path) -> None:
    def reminders(**caps: int) -> list[tuple[str, str, str]]:
        rows = simulate(ROOT / "rules" / "journeys", _two_visits_one_afternoon(), NOW,
                        load_settings(**caps)).rows
        return sorted((r.about, r.state, r.due_utc[:10]) for r in rows if r.step == "reminder-72h")

    # The TCPA defaults (1 a day, 3 a week): the first visit's three texts use the week, so the
    # second visit's 72 h reminder cannot go before the visit and is skipped, saying why.
    (first, second) = reminders()
    assert first == ("Appointment/a14", "sent", "2026-03-06")
    assert second[1] == "skipped"
    rows = simulate(ROOT / "rules" / "journeys", _two_visits_one_afternoon(), NOW,
                    load_settings()).rows
    assert any("frequency cap" in (r.why or "") for r in rows if r.about == "Appointment/a16")
    assert reminders(cap_per_day=2, cap_per_week=6) == [
        ("Appointment/a14", "sent", "2026-03-06"),
        ("Appointment/a16", "sent", "2026-03-06")]


def test_cli_prints_a_table_or_json(tmp_path: Path) -> None:
    path = bundle(tmp_path, demo_resources())
    runner = CliRunner()
    table = runner.invoke(app, ["simulate", "--rules", "rules/journeys", "--input", str(path),
                                "--now", "2026-03-02T09:00:00Z"])
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[0].split()[:4] == ["patient", "journey", "step", "state"]
    as_json = runner.invoke(app, ["simulate", "--rules", "rules/journeys", "--input", str(path),
                                  "--now", "2026-03-02T09:00:00Z", "--format", "json"])
    forecast = json.loads(as_json.stdout)
    assert {"patient", "due_utc", "due_local", "channel", "why"} <= set(forecast["rows"][0])
    assert forecast["summary"]["by_channel"] == {"email": 5, "sms": 10}
    assert "15 messages (5 email, 10 sms)" in table.output


def test_cli_refuses_an_until_before_now(tmp_path: Path) -> None:
    path = bundle(tmp_path, demo_resources())
    result = CliRunner().invoke(app, ["simulate", "--rules", "rules/journeys", "--input",
                                      str(path), "--now", "2026-03-02T09:00:00Z",
                                      "--until", "2026-03-01T00:00:00Z"])
    assert result.exit_code == 2 and "--until" in result.output


def test_ndjson_input_and_bad_rules_exit_1(tmp_path: Path) -> None:
    ndjson = tmp_path / "export.ndjson"
    ndjson.write_text("\n".join(json.dumps(r) for r in demo_resources()) + "\n")
    assert len(read_resources(ndjson)) == len(demo_resources())
    bad = tmp_path / "bad.yaml"
    bad.write_text("journey: x\n")
    result = CliRunner().invoke(app, ["simulate", "--rules", str(bad), "--input", str(ndjson)])
    assert result.exit_code == 1 and f"{bad}:1:1:" in result.output


def _encounter_export() -> list[dict[str, Any]]:
    patient = {"resourceType": "Patient", "id": "eve", "birthDate": "1970-03-02",
               "active": True, "telecom": [{"system": "phone", "value": "+15555550199",
                                            "use": "mobile"}]}
    encounter = {"resourceType": "Encounter", "id": "enc1", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                           "code": "AMB"},
                 "subject": {"reference": "Patient/eve"},
                 "period": {"start": "2026-03-02T08:00:00Z", "end": "2026-03-02T08:30:00Z"}}
    return [patient, encounter]


def _printed(forecast: Any) -> tuple[str, str, list[str]]:
    return as_json(forecast), as_table(forecast), forecast.notes


def test_patients_split_across_workers_forecast_byte_for_byte_the_same(tmp_path: Path) -> None:
    # A synthetic month (reschedules, cancellations, no-shows, encounters, procedures, time
    # zones, birthdays: caps and quiet hours at work) with the demo's and the other tests'
    # patients, a Location no patient owns and an invalid resource: over the bench's six
    # journeys, and over the whole library (recall, the waitlist backfill).
    month = bench_simulate.export(80, seed=11)
    extra = [*demo_resources(), *_encounter_export(),
             {"resourceType": "Location", "id": "clinic", "name": "Clinic"},
             {"resourceType": "Appointment", "id": "bad", "status": "bogus"}]
    settings = load_settings()
    for rules, resources, workers in ((bench_simulate.journeys(tmp_path), month + extra, 3),
                                      (LIBRARY, month[:150] + extra, 2)):
        one = simulate(rules, resources, NOW, settings)
        assert one.summary["messages"] > 50
        split = simulate(rules, resources, NOW, settings, workers=workers)
        assert _printed(split) == _printed(one)
    assert one.notes[0].startswith("skipped invalid Appointment/bad")
    assert any(n.startswith("campaign birthday-greeting") for n in one.notes)


def test_the_split_keeps_each_patient_whole_and_the_shards_even() -> None:
    month = bench_simulate.export(40)
    location = {"resourceType": "Location", "id": "clinic"}
    shards = partition([location, *month], 3)
    assert len(shards) == 3 and shards[0][0] is location
    owners = [{patient_reference(r) for r in shard} - {None} for shard in shards]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert sorted(r["id"] for s in shards for r in s) == sorted(
        r["id"] for r in [location, *month])
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 6  # one patient's versions at most
    assert partition(month[:2], 4) == [month[:2]]  # one patient: one shard
    assert partition([], 2) == [[]]


def test_cli_takes_a_worker_count(tmp_path: Path) -> None:
    path = bundle(tmp_path, demo_resources())
    args = ["simulate", "--rules", "rules/journeys", "--input", str(path),
            "--now", "2026-03-02T09:00:00Z", "--format", "json"]
    one = CliRunner().invoke(app, [*args, "--workers", "1"])
    two = CliRunner().invoke(app, [*args, "--workers", "2"])
    assert one.exit_code == two.exit_code == 0, two.output
    assert one.stdout == two.stdout
    refused = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert refused.exit_code == 2
