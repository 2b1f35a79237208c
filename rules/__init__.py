"""The journey DSL: schema, loader with positioned errors, matching and planning (pure: no I/O)."""

from rules.caps import DEFAULT_POLICY, CapPolicy, Send, allowed_time
from rules.changes import ChangeKind, ResourceChange
from rules.loader import JourneyError, JourneySet, load_journey_file, load_journeys
from rules.planner import Decision, PlannedStep, decide, plan_steps, recheck
from rules.schema import Event, Journey, Step

__all__ = [
    "DEFAULT_POLICY",
    "CapPolicy",
    "ChangeKind",
    "Decision",
    "Event",
    "Journey",
    "JourneyError",
    "JourneySet",
    "PlannedStep",
    "ResourceChange",
    "Send",
    "Step",
    "allowed_time",
    "decide",
    "load_journey_file",
    "load_journeys",
    "plan_steps",
    "recheck",
]
