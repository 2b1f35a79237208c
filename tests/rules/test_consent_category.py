"""A journey's consent category: what a patient opts out of to stop it. Declared, or inferred
from the journey (a schedule: campaigns; a survey step: surveys; else appointments)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rules
from outreach.cli import app
from rules import JourneyError, load_journey_file
from rules.loader import parse_journey

JOURNEYS = Path(rules.__file__).parent / "journeys"
DECLARED = re.compile(r"^consent_category: \w+ +#.*\n", re.MULTILINE)


def undeclared(name: str) -> str:
    """A shipped journey's text without its consent_category line."""
    path = next(JOURNEYS.rglob(f"{name}.yaml"))
    text, count = DECLARED.subn("", path.read_text(encoding="utf-8"))
    assert count == 1, f"{path} no longer declares consent_category on one line"
    return text


def position(text: str, needle: str) -> tuple[int, int]:
    """1-based (line, column) of `needle` in `text`."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def errors_for(tmp_path: Path, text: str) -> list[str]:
    """The problems in a journey file, each without the `path:` prefix it must carry."""
    file = tmp_path / "journey.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(JourneyError) as info:
        load_journey_file(file)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"{file}:") for line in lines), lines
    return [line.removeprefix(f"{file}:") for line in lines]


def category_of(text: str) -> str:
    return parse_journey(text, "journey.yaml").spec.consent


@pytest.mark.parametrize(("journey", "inferred"), [
    ("birthday-greeting", "campaigns"),  # a scheduled trigger
    ("annual-visit-recall", "campaigns"),
    ("satisfaction-survey", "surveys"),  # a step asks for a score
    ("appointment-reminders", "appointments"),  # anything else
    ("no-show-recall", "appointments"),
])
def test_left_out_it_is_inferred_from_the_journey(journey: str, inferred: str) -> None:
    assert category_of(undeclared(journey)) == inferred


def test_a_schedule_makes_a_campaign_even_with_a_survey_step() -> None:
    text = undeclared("birthday-greeting").replace(
        "    category: notification\n",
        "    category: notification\n    survey: {min: 1, max: 5, low_at_most: 2}\n")
    journey = parse_journey(text, "journey.yaml")
    assert journey.spec.steps[0].survey is not None
    assert journey.spec.consent == "campaigns"


@pytest.mark.parametrize("declared", ["appointments", "surveys", "campaigns"])
@pytest.mark.parametrize("journey", ["birthday-greeting", "satisfaction-survey",
                                     "appointment-reminders"])
def test_a_declared_category_is_kept_whatever_would_be_inferred(journey: str,
                                                                declared: str) -> None:
    text = undeclared(journey).replace("trigger:\n", f"consent_category: {declared}\ntrigger:\n", 1)
    assert category_of(text) == declared


def test_null_is_the_same_as_left_out() -> None:
    text = undeclared("satisfaction-survey").replace("trigger:\n", "consent_category:\ntrigger:\n")
    assert category_of(text) == "surveys"


@pytest.mark.parametrize("value", ["marketing", "all", "Surveys", "[surveys]", "1"])
def test_an_unknown_category_points_at_the_value(tmp_path: Path, value: str) -> None:
    text = undeclared("appointment-reminders").replace(
        "trigger:\n", f"consent_category: {value}\ntrigger:\n", 1)

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, f"consent_category: {value}")
    assert error.startswith(f"{line}:{col + len('consent_category: ')}: consent_category: ")
    assert "'appointments', 'surveys' or 'campaigns'" in error


def test_an_unknown_category_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    text = undeclared("appointment-reminders").replace(
        "trigger:\n", "consent_category: news\ntrigger:\n", 1).replace("at: -72h", "at: soon")
    file = tmp_path / "journey.yaml"
    file.write_text(text, encoding="utf-8")

    with pytest.raises(JourneyError) as info:
        load_journey_file(file)

    messages = sorted(p.message for p in info.value.problems)
    assert len(messages) == 2
    assert messages[0].startswith("consent_category: ") and "bad offset 'soon'" in messages[1]


def test_every_shipped_journey_declares_its_category() -> None:
    declared = {}
    for path in sorted(JOURNEYS.rglob("*.yaml")):
        journey = load_journey_file(path)
        found = re.search(r"^consent_category: (\w+)", path.read_text(), re.MULTILINE)
        assert found is not None, f"{path.name} leaves its consent category to inference"
        assert journey.spec.consent == found.group(1)
        declared[journey.name] = found.group(1)
    assert declared == {
        "appointment-reminders": "appointments", "no-show-recall": "appointments",
        "procedure-preparation": "appointments", "post-visit-follow-up": "appointments",
        "satisfaction-survey": "surveys", "waitlist-backfill": "appointments",
        "annual-visit-recall": "campaigns", "birthday-greeting": "campaigns",
    }


def test_rules_check_prints_each_journeys_category(tmp_path: Path) -> None:
    (tmp_path / "survey.yaml").write_text(undeclared("satisfaction-survey"))
    (tmp_path / "greeting.yaml").write_text(undeclared("birthday-greeting"))

    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "satisfaction-survey (1 steps, consent category surveys)" in result.output
    assert "birthday-greeting (1 steps, consent category campaigns)" in result.output
