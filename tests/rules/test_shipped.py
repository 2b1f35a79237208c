"""The shipped journeys: the default set and the library load, with the shipped templates."""

from __future__ import annotations

from pathlib import Path

from channels.templates import TemplateCatalog
from rules import load_journeys
from rules.schema import Event

LIBRARY = Path(__file__).resolve().parents[2] / "rules" / "journeys" / "library"


def test_library_journeys_load_with_the_shipped_templates() -> None:
    journeys = load_journeys(LIBRARY, templates=TemplateCatalog().names)
    names = {j.name for j in journeys.journeys}
    assert names == {"procedure-preparation", "post-visit-follow-up", "satisfaction-survey",
                     "no-show-recall", "annual-visit-recall", "birthday-greeting",
                     "waitlist-backfill"}
    assert journeys.resource_types == ["Appointment", "Encounter"]
    assert {j.name for j in journeys.scheduled} == {"annual-visit-recall", "birthday-greeting"}
    survey = journeys.by_name("satisfaction-survey")
    assert survey is not None and survey.spec.steps[0].survey is not None
    assert survey.spec.steps[0].survey.recovery_template == "service-recovery"
    waitlist = journeys.by_name("waitlist-backfill")
    assert waitlist is not None and waitlist.spec.backfill is not None
    assert not waitlist.spec.steps and waitlist.spec.backfill.order == "earliest-request"
    noshow = journeys.by_name("no-show-recall")
    assert noshow is not None and noshow.spec.trigger.events != [Event.CREATED]
