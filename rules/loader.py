"""Load journey YAML files into compiled journeys, reporting every problem as file:line:col."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rules.cron import CronSchedule
from rules.fhirpath import Condition, FhirPathError
from rules.schema import UNION_TAGS, Journey, Step
from rules.semantics import Context, semantic_problems


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class JourneyError(Exception):
    """One or more problems in journey files; str() gives one `file:line:col: message` per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class LoadedJourney:
    """A validated journey with its conditions compiled, and the version it was loaded at."""

    spec: Journey
    path: str
    version: str
    when: Condition | None
    cancel_when: Condition | None
    name_position: tuple[int, int] = (1, 1)
    schedule: CronSchedule | None = None

    @property
    def name(self) -> str:
        return self.spec.journey

    def step(self, step_id: str) -> Step | None:
        """The step with this id (None: not in this version of the journey)."""
        return self._steps.get(step_id)

    @cached_property
    def _steps(self) -> dict[str, Step]:
        return {step.id: step for step in self.spec.steps}


class JourneySet:
    """The loaded journeys, indexed by resource type and name. Subclasses may refresh the
    contents (hot reload) in `_refresh`, which every accessor calls first."""

    def __init__(self, journeys: Iterable[LoadedJourney] = ()) -> None:
        self._set(tuple(journeys))

    def _set(self, journeys: tuple[LoadedJourney, ...]) -> None:
        by_type: dict[str, list[LoadedJourney]] = {}
        for journey in journeys:
            if journey.spec.trigger.schedule is None:
                by_type.setdefault(journey.spec.trigger.resource_type, []).append(journey)
        # One tuple swapped in one assignment: readers on other threads see the old set or the
        # new one, never a mix.
        self._state = (journeys, by_type, {j.name: j for j in journeys})

    def _refresh(self) -> None:
        """Hook for hot reload; the plain set never changes."""

    @property
    def journeys(self) -> tuple[LoadedJourney, ...]:
        self._refresh()
        return self._state[0]

    def for_resource(self, resource_type: str) -> list[LoadedJourney]:
        """The change-triggered journeys listening to this resource type."""
        self._refresh()
        return self._state[1].get(resource_type, [])

    def by_name(self, name: str) -> LoadedJourney | None:
        self._refresh()
        return self._state[2].get(name)

    def step(self, journey: str, step_id: str) -> Step | None:
        """A step of a loaded journey (None: the journey or the step is no longer loaded)."""
        found = self.by_name(journey)
        return found.step(step_id) if found is not None else None

    @property
    def scheduled(self) -> list[LoadedJourney]:
        return [j for j in self.journeys if j.spec.trigger.schedule is not None]

    @property
    def resource_types(self) -> list[str]:
        """Resource types whose changes a journey listens to (what to subscribe to and poll)."""
        self._refresh()
        return sorted(self._state[1])


class _JourneyLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read the `on:` key as True."""


_YAML_11_ONLY = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_JourneyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.2 core schema: no yes/no/on/off booleans and no base-60 numbers (`21:00` is a string).
_JourneyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_JourneyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"),
)
_JourneyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"), list("-+0123456789."),
)


def _mark(node: yaml.Node | None, path: str) -> tuple[int, int]:
    if node is None:
        return (1, 1)
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _child(node: yaml.Node | None, key: object, want_key: bool) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                found: yaml.Node = key_node if want_key else value_node
                return found
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        child: yaml.Node = node.value[key]
        return child
    return None


def _locate(root: yaml.Node, loc: Sequence[object], want_key: bool = False) -> yaml.Node:
    """The deepest node along a pydantic error location (the key itself for unknown keys)."""
    node = root
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        child = _child(node, part, want_key and last)
        if child is None:
            break
        node = child
    return node


# Parts of pydantic error locations that are not keys in the file.
_NOT_KEYS = frozenset({"function-after", "function-before", *UNION_TAGS})


def _problems_from_validation(
    exc: ValidationError, root: yaml.Node, path: str
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = [part for part in err["loc"] if part not in _NOT_KEYS]
        unknown = err["type"] == "extra_forbidden"
        node = _locate(root, loc, want_key=unknown)
        line, col = _mark(node, path)
        where = ".".join(str(p) for p in loc) or "journey"
        message = f"unknown key {where!r}" if unknown else f"{where}: {err['msg']}"
        problems.append(Problem(path, line, col, message.replace("Value error, ", "")))
    return problems


Report = Callable[[Sequence[object], str], None]


def _compile(expr: str | None, loc: Sequence[object], report: Report) -> Condition | None:
    if expr is None:
        return None
    try:
        return Condition(expr)
    except FhirPathError as exc:
        report(loc, str(exc))
        return None


def parse_journey(
    text: str, path: str, templates: Iterable[str] | None = None
) -> LoadedJourney:
    """Parse one journey document; raise JourneyError listing every problem found."""
    try:
        root = yaml.compose(text, Loader=_JourneyLoader)
        data: Any = yaml.load(text, Loader=_JourneyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise JourneyError([Problem(path, line, col, f"YAML: {exc.problem}")]) from exc
    if root is None or not isinstance(data, dict):
        raise JourneyError([Problem(path, 1, 1, "a journey file must be a YAML mapping")])
    try:
        journey = Journey.model_validate(data)
    except ValidationError as exc:
        raise JourneyError(_problems_from_validation(exc, root, path)) from exc
    problems: list[Problem] = []

    def report(loc: Sequence[object], message: str, key: bool = False) -> None:
        problems.append(Problem(path, *_mark(_locate(root, loc, want_key=key), path), message))

    when = _compile(journey.trigger.when, ["trigger", "when"], report)
    cancel = _compile(journey.cancel_when, ["cancel_when"], report)
    schedule = None
    if journey.trigger.schedule is not None:
        try:
            schedule = CronSchedule.parse(journey.trigger.schedule)
        except ValueError as exc:
            report(["trigger", "schedule"], f"trigger.schedule: {exc}")
    names = set(templates) if templates is not None else None
    semantic_problems(Context(journey, when, cancel, names), report)
    if problems:
        raise JourneyError(sorted(problems, key=lambda p: (p.line, p.column)))
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    name_at = _mark(_locate(root, ["journey"]), path)
    return LoadedJourney(journey, path, version, when, cancel, name_at, schedule)


def load_journey_file(path: Path, templates: Iterable[str] | None = None) -> LoadedJourney:
    return parse_journey(path.read_text(encoding="utf-8"), str(path), templates)


def journey_files(location: Path) -> list[Path]:
    if location.is_file():
        return [location]
    return sorted([*location.glob("*.yaml"), *location.glob("*.yml")])


def load_journeys(location: Path, templates: Iterable[str] | None = None) -> JourneySet:
    """Load every journey in a file or directory; problems from all files are reported together."""
    if not location.exists():
        raise JourneyError([Problem(str(location), 1, 1, "no such file or directory")])
    template_names = list(templates) if templates is not None else None
    loaded: list[LoadedJourney] = []
    problems: list[Problem] = []
    for file in journey_files(location):
        try:
            loaded.append(load_journey_file(file, template_names))
        except JourneyError as exc:
            problems.extend(exc.problems)
    names: dict[str, str] = {}
    for journey in loaded:
        if journey.name in names:
            problems.append(
                Problem(journey.path, *journey.name_position,
                        f"journey {journey.name!r} is also defined in {names[journey.name]}")
            )
        names[journey.name] = journey.path
    if problems:
        raise JourneyError(problems)
    return JourneySet(loaded)
