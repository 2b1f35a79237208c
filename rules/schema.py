"""The shape of a journey file, as pydantic models (unknown keys are errors)."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class Journey(_Strict):
    journey: Slug
    description: str | None = None
    trigger: Trigger
    anchor: str = "start"
    cancel_when: str | None = None
    replan_on_change: list[str] = []
    steps: list[Step] = Field(min_length=1)
    quiet_hours: QuietHours | None = None

    @model_validator(mode="after")
    def _anchor_fits_resource(self) -> Journey:
        known = ANCHORS[self.trigger.resource]
        if self.anchor != TRIGGER_TIME and self.anchor not in known:
            choices = ", ".join([*known, TRIGGER_TIME])
            raise ValueError(
                f"anchor {self.anchor!r} is not an element of {self.trigger.resource}: "
                f"use one of {choices}"
            )
        return self
