"""FHIRPath conditions: the caller's clock, %previous/%current, and parse errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rules.fhirpath import Condition, FhirPathError

DEMO = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "demo"


def demo(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEMO / name).read_text(encoding="utf-8"))
    return data


BOOKED = demo("13-appointment-chloe-v1-booked.json")  # start 2026-03-06T09:00:00Z
CANCELLED = demo("21-appointment-chloe-v2-cancelled.json")


def test_now_is_the_time_passed_in_not_the_wall_clock() -> None:
    future = Condition("status = 'booked' and start > now()")

    assert future(BOOKED, now=datetime(2026, 3, 6, 8, 59, tzinfo=UTC)) is True
    assert future(BOOKED, now=datetime(2026, 3, 6, 9, 1, tzinfo=UTC)) is False


def test_today_is_the_date_passed_in() -> None:
    same_day = Condition("start.toString().substring(0, 10) = today().toString()")

    assert same_day(BOOKED, now=datetime(2026, 3, 6, 7, 0, tzinfo=UTC)) is True
    assert same_day(BOOKED, now=datetime(2026, 3, 7, 7, 0, tzinfo=UTC)) is False


def test_previous_and_current_versions_are_available() -> None:
    was_cancelled = Condition("%previous.status = 'booked' and %current.status = 'cancelled'")
    now = datetime(2026, 3, 5, tzinfo=UTC)

    assert was_cancelled(CANCELLED, now, previous=BOOKED) is True
    assert was_cancelled(BOOKED, now, previous=BOOKED) is False
    assert was_cancelled(CANCELLED, now, previous=None) is False


def test_shipped_cancel_condition() -> None:
    cancel = Condition("status in ('cancelled' | 'noshow' | 'entered-in-error')")
    now = datetime(2026, 3, 5, tzinfo=UTC)

    assert cancel(CANCELLED, now) is True
    assert cancel(BOOKED, now) is False
    assert cancel({**BOOKED, "status": "noshow"}, now) is True


@pytest.mark.parametrize(
    "source",
    [
        "cancelationReason.text",  # element absent: empty collection
        "status = 'booked' and minutesDuration > 1000",  # false
        "status",  # a non-boolean value is not "true"
    ],
)
def test_empty_or_non_true_results_are_false(source: str) -> None:
    assert Condition(source)(BOOKED, datetime(2026, 3, 1, tzinfo=UTC)) is False


@pytest.mark.parametrize("source", ["status = 'booked' and # start", "'unterminated", "@@"])
def test_an_expression_that_does_not_parse_raises(source: str) -> None:
    with pytest.raises(FhirPathError, match="does not parse"):
        Condition(source)


@pytest.mark.parametrize("source", ["status = = 'booked'", "status in ('cancelled'", "start >"])
def test_a_grammar_error_raises_at_compile_time(source: str) -> None:
    with pytest.raises(FhirPathError, match="does not parse"):
        Condition(source)


def test_an_expression_failing_on_a_resource_raises_fhirpath_error() -> None:
    with pytest.raises(FhirPathError, match="FHIRPath failed"):
        Condition("status.noSuchFunction()")(BOOKED, datetime(2026, 3, 1, tzinfo=UTC))
