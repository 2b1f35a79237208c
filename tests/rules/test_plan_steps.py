"""planner.plan_steps: due times relative to the anchor, never in the past, never at night."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import given, settings
from hypothesis import strategies as st

import rules
from rules import PlannedStep, plan_steps
from rules.loader import load_journey_file, parse_journey

SHIPPED = Path(rules.__file__).parent / "journeys" / "appointment-reminders.yaml"
JOURNEY = load_journey_file(SHIPPED)  # booked now; reminders -72h, -24h, -2h; quiet 21:00-08:00
NEW_YORK = ZoneInfo("America/New_York")  # EDT (UTC-4) in June


def ny(day: int, hour: int, minute: int = 0) -> datetime:
    """A June 2026 wall-clock time in New York."""
    return datetime(2026, 6, day, hour, minute, tzinfo=NEW_YORK)


def by_id(planned: list[PlannedStep]) -> dict[str, PlannedStep]:
    return {p.step.id: p for p in planned}


def in_quiet_hours(moment: datetime, tz: ZoneInfo) -> bool:
    clock = moment.astimezone(tz).time()
    return clock >= time(21) or clock < time(8)


def test_steps_fall_at_offsets_from_the_anchor_and_immediately_means_now() -> None:
    anchor, now = ny(20, 10), ny(10, 9, 30)

    steps = by_id(plan_steps(JOURNEY, anchor, now, NEW_YORK))

    assert steps["booked"].due_at == now
    assert steps["reminder-72h"].due_at == anchor - timedelta(hours=72)
    assert steps["reminder-24h"].due_at == anchor - timedelta(hours=24)
    assert steps["reminder-2h"].due_at == ny(20, 8)  # exactly the end of quiet hours: allowed
    assert all(p.skip_reason is None for p in steps.values())


def test_steps_already_past_are_skipped_and_never_due_before_now() -> None:
    anchor, now = ny(20, 10), ny(19, 12)  # 22 h before the visit

    steps = by_id(plan_steps(JOURNEY, anchor, now, NEW_YORK))

    for late in ("reminder-72h", "reminder-24h"):
        assert steps[late].skip_reason is not None
        assert "passed" in steps[late].skip_reason
        assert steps[late].due_at == now
    assert steps["reminder-2h"].skip_reason is None
    assert steps["reminder-2h"].due_at == ny(20, 8)


def test_a_step_in_the_early_morning_moves_to_eight_the_same_day() -> None:
    anchor, now = ny(20, 9), ny(10, 12)  # -2h would be 07:00

    steps = by_id(plan_steps(JOURNEY, anchor, now, NEW_YORK))

    assert steps["reminder-2h"].due_at == ny(20, 8)
    assert steps["reminder-2h"].skip_reason is None


def test_a_step_late_in_the_evening_moves_to_eight_the_next_day() -> None:
    anchor, now = ny(20, 22, 30), ny(10, 12)  # -72h and -24h at 22:30

    steps = by_id(plan_steps(JOURNEY, anchor, now, NEW_YORK))

    assert steps["reminder-72h"].due_at == ny(18, 8)
    assert steps["reminder-24h"].due_at == ny(20, 8)
    assert steps["reminder-72h"].skip_reason is None
    assert steps["reminder-24h"].skip_reason is None


def test_a_booking_at_night_is_confirmed_at_eight_not_dropped() -> None:
    anchor, now = ny(20, 10), ny(10, 23, 15)

    steps = by_id(plan_steps(JOURNEY, anchor, now, NEW_YORK))

    assert steps["booked"].due_at == ny(11, 8)
    assert steps["booked"].skip_reason is None


def test_a_reminder_pushed_past_the_visit_by_quiet_hours_is_skipped_with_a_reason() -> None:
    anchor, now = ny(20, 23, 30), ny(10, 12)  # -2h is 21:30, next 08:00 is after the visit

    steps = by_id(plan_steps(JOURNEY, anchor, now, NEW_YORK))

    assert steps["reminder-2h"].skip_reason is not None
    assert "quiet hours" in steps["reminder-2h"].skip_reason
    assert steps["reminder-24h"].due_at == ny(20, 8)  # 23:30 the day before moves to 08:00
    assert steps["reminder-24h"].skip_reason is None


def test_quiet_hours_are_in_the_patients_zone() -> None:
    anchor = datetime(2026, 6, 20, 14, 0, tzinfo=UTC)  # 10:00 in New York, 23:00 in Tokyo
    now = datetime(2026, 6, 1, tzinfo=UTC)

    new_york = by_id(plan_steps(JOURNEY, anchor, now, NEW_YORK))
    tokyo = by_id(plan_steps(JOURNEY, anchor, now, ZoneInfo("Asia/Tokyo")))

    assert new_york["reminder-24h"].due_at == anchor - timedelta(hours=24)
    assert tokyo["reminder-24h"].due_at == datetime(2026, 6, 20, 8, tzinfo=ZoneInfo("Asia/Tokyo"))


def test_without_quiet_hours_night_steps_stay_put() -> None:
    text = SHIPPED.read_text().replace('quiet_hours: {from: "21:00", to: "08:00"}\n', "")
    journey = parse_journey(text, "no-quiet.yaml")
    anchor, now = ny(20, 23, 30), ny(10, 23, 15)

    steps = by_id(plan_steps(journey, anchor, now, NEW_YORK))

    assert steps["booked"].due_at == now
    assert steps["reminder-2h"].due_at == ny(20, 21, 30)
    assert steps["reminder-2h"].skip_reason is None


ZONES = sorted(available_timezones() - {"Factory", "localtime"})
MOMENTS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    anchor=MOMENTS,
    lead=st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=10)),
    zone=st.sampled_from(ZONES),
)
def test_planned_steps_are_never_in_quiet_hours_or_before_now(
    anchor: datetime, lead: timedelta, zone: str
) -> None:
    tz, now = ZoneInfo(zone), anchor - lead

    planned = plan_steps(JOURNEY, anchor, now, tz)

    assert [p.step.id for p in planned] == [s.id for s in JOURNEY.spec.steps]
    for step in planned:
        assert step.due_at >= now
        if step.skip_reason is None:
            assert not in_quiet_hours(step.due_at, tz), (step.step.id, step.due_at.astimezone(tz))
            if step.step.at != "immediately":
                assert step.due_at < anchor
