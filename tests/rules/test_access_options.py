"""The journey options of the access loop: `reschedule:` and `backfill:`, checked with positions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rules import JourneyError
from rules.loader import load_journey_file

BASE = "journey: x\ntrigger:\n  resource: {resource}\n"
STEP = "steps:\n  - {id: s, at: immediately, channel: sms, template: t, replies: {R: reschedule}}\n"


def _problems(tmp_path: Path, text: str) -> list[str]:
    file = tmp_path / "x.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(JourneyError) as info:
        load_journey_file(file)
    return [str(p) for p in info.value.problems]


def test_a_journey_without_steps_needs_a_backfill(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, BASE.format(resource="Appointment"))
    assert "a journey needs at least one step (or a backfill)" in problem


def test_only_an_appointment_frees_a_time(tmp_path: Path) -> None:
    problem = _problems(tmp_path, BASE.format(resource="Encounter") + "backfill: {}\n")[0]
    assert problem.startswith(f"{tmp_path / 'x.yaml'}:4:")
    assert "only an Appointment's cancellation frees a time" in problem


@pytest.mark.parametrize("value", ["-1d", "soon", "0h", "+2h", "@10:00"])
def test_reschedule_durations_are_positive_durations(tmp_path: Path, value: str) -> None:
    text = BASE.format(resource="Appointment") + STEP + f"reschedule: {{hold: '{value}'}}\n"
    (problem,) = _problems(tmp_path, text)
    assert ":6:" in problem and "use a duration such as 2h, 1d or 30d" in problem


def test_the_defaults_hold_two_hours_within_thirty_days(tmp_path: Path) -> None:
    file = tmp_path / "x.yaml"
    file.write_text(BASE.format(resource="Appointment") + STEP + "reschedule: {}\n")
    spec = load_journey_file(file).spec.reschedule
    assert spec is not None and spec.options == 3
    assert (spec.duration("lead_time"), spec.duration("horizon"), spec.duration("hold")) == (
        timedelta(days=1), timedelta(days=30), timedelta(hours=2))
