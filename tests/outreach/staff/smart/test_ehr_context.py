"""What the clinician view makes of the EHR's resources: names, birth dates and visit actors as
a clinician reads them, and nothing raised by a resource shaped unlike FHIR."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from outreach.staff.smart.ehr_context import Banner, _actors, human_name


def test_the_official_name_with_its_prefix_else_the_first_else_the_text() -> None:
    assert human_name({"name": [
        {"use": "nickname", "given": ["Dee"]},
        {"use": "official", "prefix": ["Dr"], "given": ["Dana", "J"], "family": "Whitfield"},
    ]}) == "Dr Dana J Whitfield"
    assert human_name({"name": [{"text": "  Maria Example ", "family": "Ignored"}]}) == \
        "Maria Example"
    assert human_name({"name": "Main Street Clinic"}) == "Main Street Clinic"  # a Location
    assert human_name({"name": [{"given": ["x" * 500]}]}) == "x" * 200


def test_a_birth_date_with_the_age_on_the_clinics_today() -> None:
    banner = Banner("Maria Example", "1961-03-12", "female")
    assert banner.born(date(2026, 3, 11)) == "12 Mar 1961 (64 y)"
    assert banner.born(date(2026, 3, 12)) == "12 Mar 1961 (65 y)"
    assert Banner("X", "1961-03", None).born(date(2026, 1, 1)) == "1961-03"  # as given
    assert Banner("X", None, None).born(date(2026, 1, 1)) is None


@pytest.mark.parametrize("resource", [
    {"name": 7}, {"name": [7, None, "x"]}, {"name": [{"given": "Dana", "family": 3}]},
    {"name": [{"given": [None, 4], "prefix": {"a": 1}}]}, {"participant": 5},
    {"participant": [3, {"actor": "Location/x"}, {"actor": {"reference": 9}}]},
])
def test_resources_unlike_fhir_give_nothing_rather_than_an_error(
        resource: dict[str, Any]) -> None:
    assert human_name(resource) is None
    assert _actors(resource) == []
