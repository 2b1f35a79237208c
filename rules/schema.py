"""The shape of a journey file, as pydantic models (unknown keys are errors)."""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rules.durations import AT_PATTERN, parse_at, parse_offset

ChannelName = Literal["sms", "email", "console"]
Category = Literal["notification", "reminder", "instruction", "alert"]
# What a patient can opt out of, one at a time (STOP on SMS still stops every text to the number).
ConsentCategory = Literal["appointments", "surveys", "campaigns"]
CONSENT_CATEGORIES: tuple[str, ...] = ("appointments", "surveys", "campaigns")
ReplyAction = Literal["confirm", "cancel", "cancel-appointment", "score", "reschedule", "book"]
Recipient = Literal["patient", "caregiver", "caregiver-or-patient"]
Cycle = Literal["once", "year", "month", "week", "day"]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]
ResourceType = Literal["Appointment", "Encounter", "Patient"]

# Which element of which resource a journey's step offsets can be measured from.
ANCHORS: dict[str, dict[str, str]] = {
    "Appointment": {"start": "start", "end": "end"},
    "Encounter": {"period.start": "period.start", "period.end": "period.end"},
    "Patient": {},
}
TRIGGER_TIME = "trigger"
# The element whose change makes a `rescheduled` event.
WHEN_ELEMENT = {"Appointment": "start", "Encounter": "period.start"}
# FHIR R4 status codes (fhir.resources does not check them; a typo would never match).
STATUSES: dict[str, frozenset[str]] = {
    "Appointment": frozenset({
        "proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
        "entered-in-error", "checked-in", "waitlist",
    }),
    "Encounter": frozenset({
        "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
        "entered-in-error", "unknown",
    }),
    "Patient": frozenset(),
}


class Event(enum.StrEnum):
    """A kind of change a trigger can listen to (besides a status transition)."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    RESCHEDULED = "rescheduled"  # the resource's time (Appointment.start) moved


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _listify(value: object) -> object:
    return [value] if isinstance(value, str) else value


class StatusChange(_Strict):
    """`from` → `to`; either side may be left out to mean any status (`from` left out also
    matches a resource created with a `to` status)."""

    from_: list[str] | None = Field(default=None, alias="from")
    to: list[str] | None = None

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _listify(value)


class StatusEvent(_Strict):
    status: StatusChange


def _on_tag(value: Any) -> str:
    return "status-change" if isinstance(value, dict | StatusEvent) else "event"


OnItem = Annotated[
    Annotated[Event, Tag("event")] | Annotated[StatusEvent, Tag("status-change")],
    Discriminator(_on_tag),
]
UNION_TAGS = frozenset({"event", "status-change"})  # dropped from error locations


class Trigger(_Strict):
    """What starts a journey: a change to a resource (`on` + `when`), or a schedule (`schedule`
    + `search` + `when`) for campaigns such as recalls and birthday greetings."""

    resource: ResourceType | None = None
    on: list[OnItem] | None = None
    when: str | None = None
    schedule: str | None = Field(default=None, description="cron: minute hour day month weekday")
    search: str | None = Field(default=None, description="FHIR search, e.g. Patient?active=true")
    cycle: Cycle = "once"

    @field_validator("on", mode="after")
    @classmethod
    def _not_empty(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None and not value:
            raise ValueError("no change kinds listed: the journey can never fire")
        return value

    @model_validator(mode="after")
    def _event_or_schedule(self) -> Trigger:
        if self.schedule is None:
            if self.search is not None:
                raise ValueError("search is only used with schedule")
            if self.resource is None:
                raise ValueError("resource is required (or a schedule with a search)")
            if self.on is None:
                object.__setattr__(self, "on", [Event.CREATED, Event.UPDATED])
            return self
        if self.on is not None:
            raise ValueError("a scheduled trigger has no `on`: it runs on its schedule")
        if self.search is None:
            raise ValueError("a scheduled trigger needs a search, e.g. Patient?active=true")
        searched = self.search.split("?", 1)[0].strip()
        if searched not in STATUSES:
            raise ValueError(f"search must start with one of {', '.join(STATUSES)}, "
                             f"e.g. Patient?active=true (got {searched!r})")
        if self.resource is not None and self.resource != searched:
            raise ValueError(f"resource {self.resource} does not match the search ({searched})")
        object.__setattr__(self, "resource", searched)
        return self

    @property
    def resource_type(self) -> str:
        assert self.resource is not None, "set by the validator"
        return self.resource

    @property
    def events(self) -> list[Event | StatusEvent]:
        return list(self.on or [])


class Survey(_Strict):
    """A step that asks for a score; the reply handling (dispatch) reads this declaration."""

    min: int = 1
    max: int = 5
    low_at_most: int = Field(2, description="a score at or below this starts service recovery")
    recovery_template: Slug | None = Field(None, description="sent back after a low score")
    recovery_task: str | None = Field(None, description="Task for patient-relations staff")

    @model_validator(mode="after")
    def _range(self) -> Survey:
        if not self.min <= self.low_at_most < self.max:
            raise ValueError("need min <= low_at_most < max")
        return self


class Variant(_Strict):
    """One message of an experiment: its template, and its share of patients."""

    template: Slug
    weight: int = Field(1, ge=1, le=1000)


class Step(_Strict):
    id: Slug
    at: str = Field(json_schema_extra={"pattern": AT_PATTERN})
    channel: list[ChannelName] = Field(min_length=1)
    template: Slug | None = Field(None, description="the message; or `variants` for an experiment")
    variants: list[Variant] | None = Field(
        None, min_length=2, max_length=10,
        description="an experiment: two or more templates with weights; each patient always "
                    "gets the same one, and the outcome report compares them")
    category: Category = "reminder"
    replies: dict[str, ReplyAction] | None = Field(
        default=None,
        description="reply keyword → action: confirm, cancel (staff are asked), cancel-appointment "
                    "(cancelled in the EHR), score, reschedule (new times offered), book (times "
                    "offered for a new appointment, e.g. a recall); e.g. {C: confirm, X: cancel}")
    survey: Survey | None = None
    cap_exempt: bool = Field(
        default=False, description="not limited by, nor counted in, the per-patient caps")
    recipient: Recipient | None = Field(default=None, description="overrides the journey's")

    @field_validator("channel", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _listify(value)

    @field_validator("at")
    @classmethod
    def _offset_parses(cls, value: str) -> str:
        parse_at(value)
        return value

    @model_validator(mode="after")
    def _one_message(self) -> Step:
        if self.template is not None and self.variants is not None:
            raise ValueError("give either a template or variants (an experiment), not both")
        if self.template is None and self.variants is None:
            raise ValueError("give a template, or variants for an experiment")
        if self.variants is not None:
            names = [v.template for v in self.variants]
            if len(set(names)) != len(names):
                raise ValueError("each variant needs its own template")
        return self

    @property
    def templates(self) -> list[str]:
        """Every template this step may send."""
        return [v.template for v in self.variants] if self.variants else [str(self.template)]

    def variant_for(self, key: str) -> str:
        """The template for one patient (`key` names patient, journey and step): the same every
        time, and across patients in proportion to the weights."""
        if not self.variants:
            return str(self.template)
        total = sum(v.weight for v in self.variants)
        point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % total
        for variant in self.variants:
            point -= variant.weight
            if point < 0:
                return variant.template
        raise AssertionError("weights are positive")  # pragma: no cover

    @field_validator("replies")
    @classmethod
    def _keywords(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for keyword in value or {}:
            if not re.fullmatch(r"[A-Za-z0-9]{1,10}", keyword):
                raise ValueError(f"reply keyword {keyword!r}: use 1-10 letters or digits")
        return value


_DURATION = r"^\s*\d+\s*[mhdw]\s*$"


def _positive_duration(value: str) -> str:
    if not re.fullmatch(_DURATION, value) or _as_timedelta(value) <= timedelta(0):
        raise ValueError(f"use a duration such as 2h, 1d or 30d (got {value!r})")
    return value


def _as_timedelta(value: str) -> timedelta:
    return parse_offset(value) or timedelta(0)


class Reschedule(_Strict):
    """How a reply `reschedule` (or `book`) finds times: free Slots of the same practitioner,
    location and service type as the appointment (or the visit a recall is about), no sooner
    than `lead_time` and no later than `horizon` from the reply, inside the patient's stated
    availability."""

    options: int = Field(3, ge=1, le=5, description="how many times to offer (1-5)")
    lead_time: str = Field("1d", json_schema_extra={"pattern": _DURATION},
                           description="no time sooner than this after the reply, e.g. 1d")
    horizon: str = Field("30d", json_schema_extra={"pattern": _DURATION},
                         description="no time later than this after the reply, e.g. 30d")
    hold: str = Field("2h", json_schema_extra={"pattern": _DURATION},
                      description="how long the options stay open for an answer")

    @field_validator("lead_time", "horizon", "hold")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _positive_duration(value)

    def duration(self, name: Literal["lead_time", "horizon", "hold"]) -> timedelta:
        return _as_timedelta(getattr(self, name))


class Backfill(_Strict):
    """A waitlist journey: when its trigger fires (an appointment cancelled), the freed time is
    offered by SMS to waitlisted Appointments (status waitlist) of the same practitioner,
    location and service type whose requestedPeriod holds it, `at_once` patients at a time, in
    `order`; the first YES books it; after `hold` without one the next patients are asked."""

    order: Literal["earliest-request", "latest-request"] = Field(
        "earliest-request", description="who is asked first: the longest waiting by default")
    at_once: int = Field(1, ge=1, le=10, description="patients asked at the same time")
    hold: str = Field("2h", json_schema_extra={"pattern": _DURATION},
                      description="how long each patient has to answer YES")
    lead_time: str = Field("2h", json_schema_extra={"pattern": _DURATION},
                           description="no offer for a time starting sooner than this")
    max_patients: int = Field(20, ge=1, le=200, description="patients asked, at most, in all")

    @field_validator("hold", "lead_time")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _positive_duration(value)

    def duration(self, name: Literal["lead_time", "hold"]) -> timedelta:
        return _as_timedelta(getattr(self, name))


class QuietHours(_Strict):
    start: time = Field(alias="from")
    end: time = Field(alias="to")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_time(cls, value: object) -> object:
        if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"use a local clock time as \"HH:MM\", e.g. \"21:00\" (got {value!r})")
        return value


DEFAULT_ANCHOR = {"Appointment": "start", "Encounter": "period.end", "Patient": TRIGGER_TIME}


class Journey(_Strict):
    journey: Slug
    description: str | None = None
    trigger: Trigger
    anchor: str = "start"
    cancel_when: str | None = None
    replan_on_change: list[str] = []
    recipient: Recipient = "patient"
    # Before `steps`, so the steps' check sees whether a backfill stands in for them.
    backfill: Backfill | None = Field(
        default=None, description="offer the time this trigger frees to the waitlist")
    reschedule: Reschedule | None = Field(
        default=None, description="how a reply `reschedule` offers new times (defaults apply "
                                  "when a step's replies ask for reschedule)")
    steps: list[Step] = Field(default=[], validate_default=True)
    quiet_hours: QuietHours | None = None
    consent_category: ConsentCategory | None = Field(
        default=None,
        description="what a patient opts out of to stop this journey: appointments (confirmations, "
                    "reminders, instructions), surveys, campaigns (recalls, greetings); left out: "
                    "campaigns for a scheduled trigger, surveys when a step asks for a score, "
                    "else appointments")
    task_owner: str | None = Field(
        default=None, pattern=r"^(Organization|PractitionerRole|Practitioner|CareTeam|"
        r"HealthcareService)/[A-Za-z0-9\-.]{1,64}$",
        description="who gets the staff Tasks this journey's replies raise, e.g. "
                    "Organization/patient-relations")

    @model_validator(mode="before")
    @classmethod
    def _default_anchor(cls, data: Any) -> Any:
        # The natural anchor depends on the resource: an Appointment's start, the end of an
        # Encounter, the run time of a campaign over Patients.
        if isinstance(data, dict) and "anchor" not in data:
            trigger = data.get("trigger")
            resource = trigger.get("resource") if isinstance(trigger, dict) else None
            search = trigger.get("search") if isinstance(trigger, dict) else None
            if resource is None and isinstance(search, str):
                resource = search.split("?", 1)[0].strip()
            if isinstance(resource, str) and resource in DEFAULT_ANCHOR:
                data = {**data, "anchor": DEFAULT_ANCHOR[resource]}
        return data

    @field_validator("steps")
    @classmethod
    def _steps_or_backfill(cls, value: list[Step], info: ValidationInfo) -> list[Step]:
        if not value and info.data.get("backfill") is None:
            raise ValueError("a journey needs at least one step (or a backfill)")
        return value

    @field_validator("backfill")
    @classmethod
    def _backfill_frees_a_time(cls, value: Backfill | None,
                               info: ValidationInfo) -> Backfill | None:
        trigger = info.data.get("trigger")
        if value is not None and trigger is not None and trigger.resource != "Appointment":
            raise ValueError("only an Appointment's cancellation frees a time")
        return value

    @model_validator(mode="after")
    def _default_consent_category(self) -> Journey:
        if self.consent_category is None:
            category = ("campaigns" if self.trigger.schedule is not None
                        else "surveys" if any(step.survey for step in self.steps)
                        else "appointments")
            object.__setattr__(self, "consent_category", category)
        return self

    @property
    def consent(self) -> str:
        """The consent category, always set after validation."""
        assert self.consent_category is not None, "set by the validator"
        return self.consent_category

    @field_validator("anchor")
    @classmethod
    def _anchor_fits_resource(cls, value: str, info: ValidationInfo) -> str:
        trigger = info.data.get("trigger")
        if trigger is None:  # already reported on the trigger
            return value
        known = ANCHORS[trigger.resource_type]
        if value != TRIGGER_TIME and value not in known:
            choices = ", ".join([*known, TRIGGER_TIME])
            raise ValueError(
                f"anchor {value!r} is not an element of {trigger.resource_type}: "
                f"use one of {choices}"
            )
        return value


_CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"
_ONE_OR_MANY = frozenset({"channel", "from", "to"})


def _editor_friendly(node: Any) -> None:
    """What the validators accept beyond the pydantic types: one item for a list, "HH:MM"."""
    if isinstance(node, list):
        for item in node:
            _editor_friendly(item)
        return
    if not isinstance(node, dict):
        return
    for name, prop in (node.get("properties") or {}).items():
        if prop.get("format") == "time":
            del prop["format"]
            prop["pattern"] = _CLOCK
        for option in [prop, *prop.get("anyOf", [])]:
            if name in _ONE_OR_MANY and option.get("type") == "array":
                items, extra = option.pop("items"), dict(option)
                sizes = {k: extra.pop(k) for k in ("minItems", "maxItems") if k in extra}
                option.clear()
                option["anyOf"] = [items, {"type": "array", "items": items, **sizes}]
                option.update({k: v for k, v in extra.items() if k != "type"})
    for value in node.values():
        _editor_friendly(value)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a journey file, for editors (yaml-language-server) and CI."""
    schema = Journey.model_json_schema(by_alias=True, mode="validation")
    _editor_friendly(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fhir-outreach journey"
    return schema
