"""The shape of a journey file, as pydantic models (unknown keys are errors)."""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rules.changes import ChangeKind
from rules.durations import parse_offset

ChannelName = Literal["sms", "email", "console"]
Category = Literal["notification", "reminder", "instruction", "alert"]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]

# Which element of which resource a journey's step offsets can be measured from.
ANCHORS: dict[str, dict[str, str]] = {
    "Appointment": {"start": "start", "end": "end"},
    "Encounter": {"period.start": "period.start", "period.end": "period.end"},
}
TRIGGER_TIME = "trigger"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Trigger(_Strict):
    resource: Literal["Appointment", "Encounter"]
    on: list[ChangeKind] = Field(default=[ChangeKind.CREATED, ChangeKind.UPDATED], min_length=1)
    when: str | None = None


class Step(_Strict):
    id: Slug
    at: str
    channel: list[ChannelName] = Field(min_length=1)
    template: Slug
    category: Category = "reminder"
    replies: dict[str, str] | None = None

    @field_validator("channel", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("at")
    @classmethod
    def _offset_parses(cls, value: str) -> str:
        parse_offset(value)
        return value


class QuietHours(_Strict):
    start: time = Field(alias="from")
    end: time = Field(alias="to")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_time(cls, value: object) -> object:
        if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"use a local clock time as \"HH:MM\", e.g. \"21:00\" (got {value!r})")
        return value


class Journey(_Strict):
    journey: Slug
    description: str | None = None
    trigger: Trigger
    anchor: str = "start"
    cancel_when: str | None = None
    replan_on_change: list[str] = []
    steps: list[Step] = Field(min_length=1)
    quiet_hours: QuietHours | None = None

    @field_validator("anchor")
    @classmethod
    def _anchor_fits_resource(cls, value: str, info: ValidationInfo) -> str:
        trigger = info.data.get("trigger")
        if trigger is None:  # already reported on the trigger
            return value
        known = ANCHORS[trigger.resource]
        if value != TRIGGER_TIME and value not in known:
            choices = ", ".join([*known, TRIGGER_TIME])
            raise ValueError(
                f"anchor {value!r} is not an element of {trigger.resource}: use one of {choices}"
            )
        return value
