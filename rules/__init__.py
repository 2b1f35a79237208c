"""The journey DSL: schema, loader with positioned errors, matching and planning (pure: no I/O)."""

from rules.changes import ChangeKind, ResourceChange
from rules.loader import JourneyError, JourneySet, load_journey_file, load_journeys
from rules.planner import Decision, PlannedStep, decide, plan_steps
from rules.schema import Journey, Step

__all__ = [
    "ChangeKind",
    "Decision",
    "Journey",
    "JourneyError",
    "JourneySet",
    "PlannedStep",
    "ResourceChange",
    "Step",
    "decide",
    "load_journey_file",
    "load_journeys",
    "plan_steps",
]
