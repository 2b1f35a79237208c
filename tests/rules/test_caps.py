"""rules.caps: per-patient caps defer, never drop; they hold across journeys."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.caps import DEFAULT_POLICY, CapPolicy, Send, allowed_time
from rules.loader import parse_journey
from rules.planner import plan_steps

NY = ZoneInfo("America/New_York")


def ny(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=NY)


def test_a_free_day_is_allowed_as_asked() -> None:
    assert allowed_time(ny(10, 9), [], NY) == ny(10, 9)


def test_a_second_text_the_same_local_day_moves_to_the_next_day_same_clock() -> None:
    assert allowed_time(ny(10, 18), [Send(ny(10, 9), "sms")], NY) == ny(11, 18)


def test_days_are_the_patients_local_dates_not_utc() -> None:
    # 21:00 in New York is 01:00 UTC the next day: still the same local date as 09:00.
    assert allowed_time(ny(10, 21), [Send(ny(10, 9), "sms")], NY) == ny(11, 21)


def test_exempt_and_uncapped_sends_do_not_count() -> None:
    sends = [Send(ny(10, 9), "sms", exempt=True), Send(ny(10, 10), "email")]
    assert allowed_time(ny(10, 18), sends, NY) == ny(10, 18)


def test_a_week_cap_counts_any_seven_consecutive_days_including_future_sends() -> None:
    sends = [Send(ny(d, 9), "sms") for d in (8, 12, 14)]  # three in 8..14
    # The 10th sits in windows 8..14: full. The first date whose windows all have room is 15
    # (window 9..15 holds 12 and 14 only); 15 itself is empty.
    assert allowed_time(ny(10, 9), sends, NY) == ny(15, 9)


def test_adjust_is_applied_to_every_candidate() -> None:
    def not_before_eight(moment: datetime) -> datetime:
        local = moment.astimezone(NY)
        return moment if local.time() >= time(8) else local.replace(hour=8, minute=0)

    assert allowed_time(ny(10, 6), [Send(ny(10, 9), "sms")], NY, adjust=not_before_eight) \
        == ny(11, 8)


def test_an_impossible_policy_still_terminates() -> None:
    moment = allowed_time(ny(10, 9), [], NY, CapPolicy(per_day=0))
    assert moment > ny(10, 9)


JOURNEY_TEXT = """journey: {name}
trigger: {{resource: Appointment}}
quiet_hours: {{from: "21:00", to: "08:00"}}
steps:
  - {{id: booked, at: immediately, channel: [sms], template: t, cap_exempt: true}}
  - {{id: r72, at: -72h, channel: [sms, email], template: t}}
  - {{id: r24, at: -24h, channel: [sms], template: t}}
  - {{id: eve, at: "-1d@17:00", channel: [sms], template: t}}
  - {{id: r2, at: -2h, channel: [sms], template: t}}
  - {{id: after, at: +1d, channel: [sms], template: t}}
"""
JOURNEYS = [parse_journey(JOURNEY_TEXT.format(name=f"j{i}"), f"j{i}.yaml") for i in range(3)]
ZONES = [ZoneInfo(z) for z in ("UTC", "America/New_York", "Asia/Kolkata", "Pacific/Auckland")]


@settings(max_examples=150, deadline=None, database=None)
@given(
    now=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31),
                     timezones=st.just(UTC)),
    leads=st.lists(st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=12)),
                   min_size=1, max_size=6),
    zone=st.sampled_from(ZONES),
)
def test_caps_hold_across_journeys_and_nothing_is_dropped_silently(
    now: datetime, leads: list[timedelta], zone: ZoneInfo
) -> None:
    """Several appointments, each through several journeys, for one patient: every local day
    has at most one capped text and every 7 local days at most three."""
    sends: list[Send] = []
    for index, lead in enumerate(leads):
        journey = JOURNEYS[index % len(JOURNEYS)]
        for planned in plan_steps(journey, now + lead, now, zone, sends):
            assert planned.due_at >= now
            local = planned.due_at.astimezone(zone).time()
            if planned.skip_reason is None:
                assert time(8) <= local < time(21), "planned inside quiet hours"
            if planned.skip_reason is None and not planned.step.cap_exempt:
                sends.append(Send(planned.due_at, "sms"))
            elif planned.skip_reason is not None:
                assert "passed" in planned.skip_reason or "past the anchor" in planned.skip_reason
    per_day = Counter(s.at.astimezone(zone).date() for s in sends)
    assert max(per_day.values(), default=0) <= DEFAULT_POLICY.per_day
    for day in per_day:
        week = sum(per_day[day + timedelta(days=i)] for i in range(7))
        assert week <= DEFAULT_POLICY.per_week, (day, week)
    assert all(isinstance(d, date) for d in per_day)
