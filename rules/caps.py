"""Per-patient frequency caps across journeys: defer a message, never drop it.

One pure function decides: `allowed_time(candidate, sends, tz)` returns the earliest time at or
after `candidate` when one more capped message keeps the patient within the policy. The planner
calls it when it plans steps (outreach.planning.enrollment passes the patient's sent and scheduled
messages); the send path can call it again with the same inputs to re-check right before a send.

Counting is by calendar day in the patient's time zone: at most `per_day` capped messages on
any local date, and at most `per_week` on any 7 consecutive local dates. Sends that are exempt
(booking confirmations: `cap_exempt: true` on the step) or on channels the policy does not cap
are neither limited nor counted. A deferred message moves to the next day at the same local
clock time (then through `adjust`, e.g. out of quiet hours), so it stays in the daytime.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Send:
    """One message already sent or scheduled for the patient."""

    at: datetime
    channel: str
    exempt: bool = False


@dataclass(frozen=True, slots=True)
class CapPolicy:
    per_day: int = 1
    per_week: int = 3
    channels: frozenset[str] = field(default_factory=lambda: frozenset({"sms"}))


DEFAULT_POLICY = CapPolicy()
# The caps look at most 7 local days either side of a send; a day more covers any time zone.
CAP_WINDOW = timedelta(days=8)
_MAX_DEFERRAL_DAYS = 400  # a policy that cannot be met (per_day=0) still terminates


def counts_toward_caps(channels: Sequence[str], exempt: bool, policy: CapPolicy) -> bool:
    """Whether a step (which may go out on any of its listed channels) is capped. Planning
    happens before the channel is chosen, so a step that might be a text counts as one."""
    return not exempt and any(channel in policy.channels for channel in channels)


def _local_dates(sends: Iterable[Send], tz: ZoneInfo, policy: CapPolicy) -> Counter[date]:
    return Counter(
        s.at.astimezone(tz).date() for s in sends
        if not s.exempt and s.channel in policy.channels
    )


def fits(day: date, per_date: Counter[date], policy: CapPolicy) -> bool:
    """One more message on `day` keeps every day and every 7-day window within the policy."""
    count = per_date.get  # not `per_date[...]`: a day without sends would call __missing__
    if count(day, 0) >= policy.per_day:
        return False
    if per_date.total() < policy.per_week:
        return True  # no window can be full (most plans: a new patient's first steps)
    # The 7 windows holding `day` slide over the 13 days around it: 13 lookups, not 49
    # (planning calls this for every capped step of every booking).
    counts = [count(day + timedelta(days=offset), 0) for offset in range(-6, 7)]
    window = sum(counts[:7])
    for first in range(7):
        if first:
            window += counts[first + 6] - counts[first - 1]
        if window >= policy.per_week:
            return False
    return True


def allowed_time(
    candidate: datetime,
    sends: Iterable[Send],
    tz: ZoneInfo,
    policy: CapPolicy = DEFAULT_POLICY,
    adjust: Callable[[datetime], datetime] = lambda moment: moment,
) -> datetime:
    """The earliest time at or after `candidate` when one more capped message fits the policy.

    `sends` may include future (scheduled) messages: the result keeps every window within the
    caps, before and after it. `adjust` moves a time to the next allowed moment for other
    reasons (quiet hours); it must never move a time backwards."""
    per_date = _local_dates(sends, tz, policy)
    moment = adjust(candidate)
    for _ in range(_MAX_DEFERRAL_DAYS):
        local = moment.astimezone(tz)
        if fits(local.date(), per_date, policy):
            return moment
        next_day = datetime.combine(local.date() + timedelta(days=1), local.timetz())
        moment = adjust(max(next_day, moment + timedelta(hours=1)))
    return moment
