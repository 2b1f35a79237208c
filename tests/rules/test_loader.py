"""Journey files: the shipped one loads, and every mistake is reported as file:line:col."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

import rules
from channels.templates import TemplateCatalog
from rules import ChangeKind, JourneyError, load_journey_file, load_journeys

SHIPPED_DIR = Path(rules.__file__).parent / "journeys"
SHIPPED = SHIPPED_DIR / "appointment-reminders.yaml"
TEXT = SHIPPED.read_text(encoding="utf-8")


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the n-th occurrence of `needle` in `text`."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def edited(old: str, new: str, text: str = TEXT) -> str:
    assert old in text, f"the shipped journey no longer contains {old!r}"
    return text.replace(old, new, 1)


def errors_for(tmp_path: Path, text: str, templates: list[str] | None = None) -> list[str]:
    file = tmp_path / "journey.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(JourneyError) as info:
        load_journey_file(file, templates)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"{file}:") for line in lines), lines
    return [line.removeprefix(f"{file}:") for line in lines]


def test_shipped_journey_loads_with_shipped_templates() -> None:
    journeys = load_journeys(SHIPPED_DIR, templates=TemplateCatalog().names)

    journey = journeys.by_name("appointment-reminders")
    assert journey is not None
    assert journeys.resource_types == ["Appointment"]
    assert [s.id for s in journey.spec.steps] == [
        "booked", "reminder-72h", "reminder-24h", "reminder-2h",
    ]
    assert journey.spec.trigger.on == [ChangeKind.CREATED, ChangeKind.UPDATED]
    assert journey.spec.quiet_hours is not None
    assert (journey.spec.quiet_hours.start, journey.spec.quiet_hours.end) == (time(21), time(8))
    assert journey.when is not None and journey.cancel_when is not None


def test_yaml_syntax_error_points_at_the_offending_token(tmp_path: Path) -> None:
    text = edited("anchor: start\n", "anchor: start\n  oops: 1\n")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, ": 1")
    assert error.startswith(f"{line}:{col}: YAML: mapping values are not allowed")


def test_unknown_top_level_key_points_at_the_key(tmp_path: Path) -> None:
    text = edited("anchor: start\n", "anchor: start\ncolour: blue\n")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "colour")
    assert error == f"{line}:{col}: unknown key 'colour'"


def test_unknown_step_key_points_at_the_key(tmp_path: Path) -> None:
    text = edited("    category: notification\n", "    category: notification\n    colour: blue\n")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "colour")
    assert (line, col) == (20, 5)
    assert error == f"{line}:{col}: unknown key 'steps.0.colour'"


def test_wrong_type_points_at_the_value(tmp_path: Path) -> None:
    text = edited("replan_on_change: [start]", "replan_on_change: 7")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "7\n")
    assert error.startswith(f"{line}:{col}: replan_on_change: ")
    assert "valid list" in error


def test_wrong_value_inside_a_list_points_at_the_item(tmp_path: Path) -> None:
    text = edited("channel: [email, sms]", "channel: [email, fax]")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "fax")
    assert error.startswith(f"{line}:{col}: steps.0.channel.1: ")


def test_bad_offset_points_at_the_value_and_says_what_is_accepted(tmp_path: Path) -> None:
    text = edited("at: -72h", "at: -72x")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "-72x")
    assert error.startswith(f"{line}:{col}: steps.1.at: bad offset '-72x'")
    assert "immediately" in error and "-72h" in error


def test_fhirpath_that_does_not_parse_points_at_the_when_value(tmp_path: Path) -> None:
    text = edited("and start > now()", "and # start > now()")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "\"status = 'booked'")
    assert error.startswith(f"{line}:{col}: FHIRPath does not parse")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("'booked' and", "'booked and"),  # unterminated string
        ("start > now()", "start >"),  # missing operand
        ("start > now()", "start > now() @"),  # stray character at the end
    ],
)
def test_fhirpath_with_a_grammar_error_is_rejected_at_load_time(
    tmp_path: Path, old: str, new: str
) -> None:
    text = edited(old, new)

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "\"status = '")
    assert error.startswith(f"{line}:{col}: FHIRPath does not parse")


def test_bad_cancel_when_points_at_its_value(tmp_path: Path) -> None:
    text = edited("'cancelled' | 'noshow'", "'cancelled' | # 'noshow'")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "\"status in (")
    assert error.startswith(f"{line}:{col}: FHIRPath does not parse")


def test_duplicate_step_id_points_at_the_second_id(tmp_path: Path) -> None:
    text = edited("id: reminder-24h", "id: reminder-72h")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "reminder-72h", occurrence=2)
    assert error == f"{line}:{col}: duplicate step id 'reminder-72h'"


def test_unknown_template_is_reported_when_template_names_are_given(tmp_path: Path) -> None:
    text = edited("template: appointment-booked", "template: appointment-bookd")

    errors = errors_for(tmp_path, text, templates=["appointment-booked", "appointment-reminder"])

    line, col = position(text, "appointment-bookd")
    assert errors == [f"{line}:{col}: unknown template 'appointment-bookd'"]


def test_template_names_are_not_checked_when_none_are_given(tmp_path: Path) -> None:
    file = tmp_path / "journey.yaml"
    file.write_text(edited("template: appointment-booked", "template: anything"))

    assert load_journey_file(file).spec.steps[0].template == "anything"


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    text = edited("id: reminder-24h", "id: reminder-72h")
    text = edited("template: appointment-booked", "template: nope", text)

    errors = errors_for(tmp_path, text, templates=["appointment-reminder"])

    assert len(errors) == 2
    assert any("duplicate step id" in e for e in errors)
    assert any("unknown template 'nope'" in e for e in errors)


def test_the_on_key_is_read_as_a_string_not_as_yaml_true(tmp_path: Path) -> None:
    file = tmp_path / "journey.yaml"
    file.write_text(edited("on: [created, updated]", "on: [updated]"))

    journey = load_journey_file(file)

    assert journey.spec.trigger.on == [ChangeKind.UPDATED]


def test_two_files_defining_the_same_journey_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(TEXT)
    (tmp_path / "b.yaml").write_text(TEXT)

    with pytest.raises(JourneyError) as info:
        load_journeys(tmp_path)

    (problem,) = info.value.problems
    assert problem.path == str(tmp_path / "b.yaml")
    assert "'appointment-reminders'" in problem.message
    assert str(tmp_path / "a.yaml") in problem.message


def test_duplicate_journey_points_at_the_journey_name(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(TEXT)
    (tmp_path / "b.yaml").write_text(TEXT)

    with pytest.raises(JourneyError) as info:
        load_journeys(tmp_path)

    line, col = position(TEXT, "appointment-reminders")
    assert (info.value.problems[0].line, info.value.problems[0].column) == (line, col)


def test_load_journeys_reports_problems_from_every_file(tmp_path: Path) -> None:
    (tmp_path / "a-good.yaml").write_text(TEXT)
    (tmp_path / "b-bad.yaml").write_text(
        edited("journey: appointment-reminders", "journey: b").replace("at: -72h", "at: soon")
    )
    (tmp_path / "c-bad.yml").write_text(
        edited("journey: appointment-reminders", "journey: c\ncolour: red")
    )

    with pytest.raises(JourneyError) as info:
        load_journeys(tmp_path)

    by_file = {Path(p.path).name: p.message for p in info.value.problems}
    assert set(by_file) == {"b-bad.yaml", "c-bad.yml"}
    assert "bad offset 'soon'" in by_file["b-bad.yaml"]
    assert by_file["c-bad.yml"] == "unknown key 'colour'"


def test_missing_location_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JourneyError, match="no such file or directory"):
        load_journeys(tmp_path / "nowhere")


def test_unquoted_quiet_hours_mean_what_they_say_or_are_rejected(tmp_path: Path) -> None:
    file = tmp_path / "journey.yaml"
    file.write_text(edited('{from: "21:00", to: "08:00"}', "{from: 21:00, to: 08:00}"))

    try:
        journey = load_journey_file(file)
    except JourneyError as exc:  # rejecting with a positioned error is also acceptable
        assert "quiet_hours" in str(exc)
        return
    assert journey.spec.quiet_hours is not None
    assert journey.spec.quiet_hours.start == time(21, 0)


def test_bad_anchor_points_at_the_anchor_value(tmp_path: Path) -> None:
    text = edited("anchor: start", "anchor: period.start")

    (error,) = errors_for(tmp_path, text)

    line, col = position(text, "period.start")
    assert error.startswith(f"{line}:{col}: ")
