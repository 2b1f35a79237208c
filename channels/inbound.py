"""What a patient's SMS reply means: opt-out and opt-in keywords, journey replies, scores."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# The carrier/CTIA opt-out and opt-in keywords Twilio also honours on long codes.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
                        "OPTOUT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})

Intent = Literal["stop", "start", "help", "confirm", "cancel", "score", "text"]
_SCORE = re.compile(r"^(10|[0-9])$")


# What a journey's `replies:` map may ask for: confirm the appointment, ask staff to cancel it
# (a Task), cancel it in the EHR directly, or read a 0-10 score.
REPLY_ACTIONS = frozenset({"confirm", "cancel", "cancel-appointment", "score"})


@dataclass(frozen=True, slots=True)
class Reply:
    intent: Intent
    score: int | None = None
    action: str | None = None


def _keyword(body: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", body.strip().upper())


def classify(body: str, replies: Mapping[str, str] | None = None,
             score_range: tuple[int, int] | None = None) -> Reply:
    """Opt-out words win over everything (a patient saying STOP is never read as a journey
    reply); then the replied-to step's own `replies` map; then a score, when the step asks for
    one (a `survey` range, or `score` among its replies: 0-10); else free text."""
    word = _keyword(body)
    if word in STOP_WORDS:
        return Reply("stop")
    if word in START_WORDS:
        return Reply("start")
    if word in HELP_WORDS:
        return Reply("help")
    for key, action in (replies or {}).items():
        if word == _keyword(key) and action == "confirm":
            return Reply("confirm", action=action)
        if word == _keyword(key) and action in ("cancel", "cancel-appointment"):
            return Reply("cancel", action=action)
    if score_range is None and "score" in (replies or {}).values():
        score_range = (0, 10)
    if score_range is not None and _SCORE.match(word):
        low, high = score_range
        if low <= int(word) <= high:
            return Reply("score", int(word))
    return Reply("text")
