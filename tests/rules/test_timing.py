"""Clock-time offsets ("the day before at 17:00 local"), the patient's zone, cron schedules."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.cron import CronSchedule
from rules.durations import Offset, parse_at
from rules.loader import parse_journey
from rules.planner import plan_steps
from rules.recipients import patient_timezone

NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1d@17:00", Offset(days=-1, clock=time(17))),
        ("+2d@09:30", Offset(days=2, clock=time(9, 30))),
        ("@07:15", Offset(days=0, clock=time(7, 15))),
        ("-72h", Offset(delta=timedelta(hours=-72))),
        ("immediately", Offset()),
    ],
)
def test_at_forms(text: str, expected: Offset) -> None:
    assert parse_at(text) == expected


@pytest.mark.parametrize("text", ["-1d@25:00", "-1h@17:00", "1d@7:00", "@", "-1d@"])
def test_bad_clock_forms_name_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError, match="-1d@17:00"):
        parse_at(text)


JOURNEY = parse_journey(
    """journey: prep
trigger: {resource: Appointment}
quiet_hours: {from: "21:00", to: "08:00"}
steps:
  - {id: eve, at: "-1d@17:00", channel: sms, template: t}
  - {id: morning, at: "@06:00", channel: sms, template: t, cap_exempt: true}
""", "prep.yaml")


def test_the_day_before_at_17_local_follows_the_patients_zone() -> None:
    anchor = datetime(2026, 6, 20, 14, 0, tzinfo=UTC)  # 10:00 in New York
    now = datetime(2026, 6, 1, tzinfo=UTC)

    steps = {p.step.id: p for p in plan_steps(JOURNEY, anchor, now, NY)}

    assert steps["eve"].due_at == datetime(2026, 6, 19, 17, 0, tzinfo=NY)
    assert steps["morning"].due_at == datetime(2026, 6, 20, 8, 0, tzinfo=NY)  # quiet hours


def test_clock_times_across_a_dst_change_stay_on_the_wall_clock() -> None:
    anchor = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # Monday after the US switch to EDT
    steps = {p.step.id: p for p in plan_steps(JOURNEY, anchor, anchor - timedelta(days=5), NY)}
    assert steps["eve"].due_at.astimezone(NY).time() == time(17, 0)


def test_a_clock_step_already_past_is_skipped_with_a_reason() -> None:
    anchor = datetime(2026, 6, 20, 14, 0, tzinfo=UTC)
    now = datetime(2026, 6, 19, 23, 0, tzinfo=UTC)  # 19:00 in New York, after 17:00
    steps = {p.step.id: p for p in plan_steps(JOURNEY, anchor, now, NY)}
    assert steps["eve"].skip_reason is not None and "passed" in steps["eve"].skip_reason
    assert steps["eve"].due_at == now


def test_patient_timezone_from_the_extension_on_the_patient_or_home_address() -> None:
    ext = {"url": "http://hl7.org/fhir/StructureDefinition/timezone", "valueCode": "Asia/Tokyo"}
    assert patient_timezone({"extension": [ext]}) == ZoneInfo("Asia/Tokyo")
    on_address = {"address": [{"use": "old", "extension": [
        {**ext, "valueCode": "Europe/Paris"}]}, {"use": "home", "extension": [ext]}]}
    assert patient_timezone(on_address) == ZoneInfo("Asia/Tokyo")
    assert patient_timezone({"extension": [{**ext, "valueCode": "Mars/Olympus"}]}) is None
    assert patient_timezone({}) is None


@pytest.mark.parametrize(
    ("cron", "moment", "expected"),
    [
        ("0 9 * * *", datetime(2026, 3, 2, 10, 30), datetime(2026, 3, 2, 9, 0)),
        ("0 9 * * *", datetime(2026, 3, 2, 8, 59), datetime(2026, 3, 1, 9, 0)),
        ("*/15 * * * *", datetime(2026, 3, 2, 10, 44), datetime(2026, 3, 2, 10, 30)),
        ("30 8 1 * *", datetime(2026, 3, 2, 10, 0), datetime(2026, 3, 1, 8, 30)),
        ("0 9 * * mon-fri", datetime(2026, 3, 1, 12, 0), datetime(2026, 2, 27, 9, 0)),  # Sun
        ("0 9 * * 0", datetime(2026, 3, 2, 12, 0), datetime(2026, 3, 1, 9, 0)),
        ("@daily", datetime(2026, 3, 2, 12, 0), datetime(2026, 3, 2, 0, 0)),
    ],
)
def test_cron_previous_tick(cron: str, moment: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(cron).previous(moment) == expected


@pytest.mark.parametrize("cron", ["0 9 * *", "60 * * * *", "0 9 * * 8", "a b c d e", "*/0 * * * *"])
def test_bad_cron_is_rejected(cron: str) -> None:
    with pytest.raises(ValueError):
        CronSchedule.parse(cron)


@settings(max_examples=200, deadline=None, database=None)
@given(moment=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
       minute=st.integers(0, 59), hour=st.integers(0, 23))
def test_cron_previous_is_the_latest_match(moment: datetime, minute: int, hour: int) -> None:
    schedule = CronSchedule.parse(f"{minute} {hour} * * *")
    tick = schedule.previous(moment)
    assert tick is not None and tick <= moment and schedule.matches(tick)
    assert moment - tick < timedelta(days=1)
