"""Experiments in journey files: a step's `variants` are checked like every other key (each
mistake at file:line:col), and each patient's variant is fixed by a hash and shared out in
proportion to the weights."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rules import load_journey_file
from rules.schema import Step
from tests.rules.test_loader import edited, errors_for, position

TEMPLATES = ["appointment-booked", "appointment-reminder", "appointment-reminder-short"]
# The shipped journey's 72 h reminder (the first step sending appointment-reminder).
REMINDER = "    template: appointment-reminder\n    replies"


def with_message(lines: str) -> str:
    """The shipped journey, its 72 h reminder sending `lines` instead of its template."""
    return edited(REMINDER, f"{lines}    replies")


def variants(*items: str) -> str:
    return "    variants:\n" + "".join(f"      - {item}\n" for item in items)


def step(**message: Any) -> Step:
    return Step.model_validate({"id": "reminder-72h", "at": "-72h", "channel": ["sms"],
                                **message})


def keys(count: int, step_id: str = "reminder-72h") -> list[str]:
    """What the send path hashes: patient, journey and step."""
    return [f"Patient/{n}|appointment-reminders|{step_id}" for n in range(count)]


# --- what `rules check` rejects ---------------------------------------------------------------


def test_variants_load_and_list_their_templates(tmp_path: Path) -> None:
    file = tmp_path / "journey.yaml"
    file.write_text(with_message(variants("{template: appointment-reminder, weight: 3}",
                                          "{template: appointment-reminder-short}")))

    loaded = load_journey_file(file, TEMPLATES).spec.steps[1]

    assert loaded.template is None
    assert loaded.templates == ["appointment-reminder", "appointment-reminder-short"]
    assert [(v.template, v.weight) for v in loaded.variants or []] == [
        ("appointment-reminder", 3), ("appointment-reminder-short", 1)]  # weight defaults to 1


def test_a_template_and_variants_together_point_at_the_step(tmp_path: Path) -> None:
    text = with_message("    template: appointment-reminder\n" + variants(
        "{template: appointment-reminder}", "{template: appointment-reminder-short}"))

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, "id: reminder-72h")
    assert error == (f"{line}:{col}: steps.1: give either a template or variants (an "
                     "experiment), not both")


def test_a_step_with_neither_template_nor_variants_points_at_the_step(tmp_path: Path) -> None:
    text = with_message("")

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, "id: reminder-72h")
    assert error == f"{line}:{col}: steps.1: give a template, or variants for an experiment"


@pytest.mark.parametrize(("items", "expected"), [
    (["{template: appointment-reminder}"], "at least 2 items"),
    ([f"{{template: t{n}}}" for n in range(11)], "at most 10 items"),
])
def test_one_variant_or_more_than_ten_point_at_the_list(
    tmp_path: Path, items: list[str], expected: str
) -> None:
    text = with_message(variants(*items))

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, "- {template:")
    assert error.startswith(f"{line}:{col}: steps.1.variants: List should have {expected}")


def test_an_empty_variants_list_is_rejected(tmp_path: Path) -> None:
    text = with_message("    variants: []\n")

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, "[]")
    assert error.startswith(f"{line}:{col}: steps.1.variants: List should have at least 2")


def test_two_variants_with_one_template_point_at_the_step(tmp_path: Path) -> None:
    text = with_message(variants("{template: appointment-reminder, weight: 1}",
                                 "{template: appointment-reminder, weight: 2}"))

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, "id: reminder-72h")
    assert error == f"{line}:{col}: steps.1: each variant needs its own template"


@pytest.mark.parametrize(("weight", "expected"), [
    ("0", "greater than or equal to 1"), ("-1", "greater than or equal to 1"),
    ("1001", "less than or equal to 1000"), ("1.5", "valid integer"), ("half", "valid integer"),
])
def test_a_bad_weight_points_at_the_weight(tmp_path: Path, weight: str, expected: str) -> None:
    text = with_message(variants("{template: appointment-reminder}",
                                 f"{{template: appointment-reminder-short, weight: {weight}}}"))

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, f"weight: {weight}}}")
    col += len("weight: ")
    assert error.startswith(f"{line}:{col}: steps.1.variants.1.weight: ")
    assert expected in error


def test_an_unknown_key_in_a_variant_points_at_the_key(tmp_path: Path) -> None:
    text = with_message(variants("{template: appointment-reminder}",
                                 "{template: appointment-reminder-short, share: 2}"))

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, "share")
    assert error == f"{line}:{col}: unknown key 'steps.1.variants.1.share'"


def test_a_bad_template_name_in_a_variant_points_at_the_name(tmp_path: Path) -> None:
    text = with_message(variants("{template: appointment-reminder}", "{template: Short_One}"))

    (error,) = errors_for(tmp_path, text, TEMPLATES)

    line, col = position(text, "Short_One")
    assert error.startswith(f"{line}:{col}: steps.1.variants.1.template: String should match")


def test_an_unknown_template_in_variants_points_at_that_variant(tmp_path: Path) -> None:
    text = with_message(variants("{template: appointment-reminder}",
                                 "{template: appointment-reminder-shrot}",
                                 "{template: appointment-reminder-long}"))

    errors = errors_for(tmp_path, text, TEMPLATES)

    shrot, long = position(text, "appointment-reminder-shrot"), position(
        text, "appointment-reminder-long")
    assert shrot[0] != long[0]  # each on its own line
    assert errors == [f"{shrot[0]}:{shrot[1]}: unknown template 'appointment-reminder-shrot'",
                      f"{long[0]}:{long[1]}: unknown template 'appointment-reminder-long'"]


def test_variant_templates_are_not_checked_when_no_names_are_given(tmp_path: Path) -> None:
    file = tmp_path / "journey.yaml"
    file.write_text(with_message(variants("{template: anything}", "{template: else}")))

    assert load_journey_file(file).spec.steps[1].templates == ["anything", "else"]


# --- which patient gets which variant ---------------------------------------------------------


def test_a_step_without_variants_always_sends_its_template() -> None:
    plain = step(template="appointment-reminder")

    assert plain.templates == ["appointment-reminder"]
    assert {plain.variant_for(key) for key in keys(200)} == {"appointment-reminder"}


def test_the_variant_is_the_same_every_time_and_in_every_process() -> None:
    one = step(variants=[{"template": "a"}, {"template": "b"}])
    again = step(variants=[{"template": "a"}, {"template": "b"}])

    first = [one.variant_for(key) for key in keys(500)]
    assert first == [one.variant_for(key) for key in keys(500)]
    assert first == [again.variant_for(key) for key in keys(500)]
    # As docs/metrics.md says: the first 8 bytes of SHA-256 of the key, modulo the total weight,
    # walk the variants in the order listed (no per-process hash seed: a restart keeps arms).
    documented = ["ab"[int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 2]
                  for key in keys(500)]
    assert first == documented


def test_the_variant_differs_across_patients_and_across_steps() -> None:
    split = step(variants=[{"template": "a"}, {"template": "b"}])

    first = [split.variant_for(key) for key in keys(1000)]
    other_step = [split.variant_for(key) for key in keys(1000, "reminder-24h")]

    assert set(first[:20]) == {"a", "b"}
    # The step is in the key: a patient's arm in one step says little about another's.
    same = sum(x == y for x, y in zip(first, other_step, strict=True))
    assert 400 < same < 600


@pytest.mark.parametrize("weights", [(1, 1), (3, 1), (1, 3), (1, 2, 7), (1000, 1)])
def test_twenty_thousand_patients_split_as_the_weights_say(weights: tuple[int, ...]) -> None:
    names = [f"variant-{n}" for n in range(len(weights))]
    split = step(variants=[{"template": t, "weight": w} for t, w in zip(names, weights,
                                                                         strict=True)])

    counts = Counter(split.variant_for(key) for key in keys(20_000))

    for name, weight in zip(names, weights, strict=True):
        share = counts[name] / 20_000
        assert abs(share - weight / sum(weights)) <= 0.02, (name, counts)
    assert set(counts) == set(names)  # even a 1-in-1001 arm is used
