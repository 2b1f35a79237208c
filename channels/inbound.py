"""What a patient's SMS reply means, in the patient's own words (English and Spanish): opt-out,
opt-in, help, confirm, cancel, reschedule, a score, or free text for staff.

Deterministic and explainable: the phrases are data (`channels/replies/{language}.yaml`), every
answer names the rule that matched, and a reply that could mean two things goes to staff."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

PHRASEBOOKS = Path(__file__).resolve().parent / "replies"
# One concatenated SMS is at most 1,600 characters; past that nothing is read for intent.
MAX_READ = 1600

Intent = Literal["stop", "start", "help", "confirm", "cancel", "reschedule", "score", "text",
                 "empty"]

# What a journey's `replies:` map may ask for: confirm the appointment, ask staff to cancel it
# (a Task), cancel it in the EHR directly, read a 0-10 score, ask for another time, or ask for
# times to book a new appointment (a recall).
REPLY_ACTIONS = frozenset({"confirm", "cancel", "cancel-appointment", "score", "reschedule",
                           "book"})
_CANCEL_ACTIONS = ("cancel", "cancel-appointment")
# Emoji patients use for yes; anything else non-verbal is read as nothing.
_EMOJI_WORDS = {"👍": " yes ", "✅": " yes ", "👌": " ok "}
_SCORE = re.compile(r"^(10|[0-9])(?: ?(?:de|out of|sobre)? ?10)?$")


@dataclass(frozen=True, slots=True)
class Reply:
    intent: Intent
    score: int | None = None
    action: str | None = None  # the journey action to carry out, when there is one
    rule: str = ""  # which rule matched, for the record and for staff
    language: str | None = None  # the language of the matched phrase, when one matched


@dataclass(frozen=True)
class Phrasebook:
    """One language's phrases (normalised), and the answers we send in that language."""

    language: str
    opt_out_anywhere: tuple[str, ...]
    opt_out_whole: tuple[str, ...]
    opt_out_phrases: tuple[str, ...]
    not_opt_out: tuple[str, ...]
    opt_in_whole: tuple[str, ...]
    help_whole: tuple[str, ...]
    confirm_whole: tuple[str, ...]
    confirm_phrases: tuple[str, ...]
    cancel_phrases: tuple[str, ...]
    reschedule_phrases: tuple[str, ...]
    filler: tuple[str, ...] = ()
    cancel_words: tuple[str, ...] = ()
    appointment_words: tuple[str, ...] = ()
    decline_whole: tuple[str, ...] = ()  # "no" to an offered time
    answers: Mapping[str, str] = field(default_factory=dict)
    # Named phrase lists saying when the patient can come (read by channels.availability).
    availability: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def normalize(text: str) -> str:
    """Lower case, accents and apostrophes dropped, punctuation and emoji to spaces: the form
    phrases are matched in ("¡Sí, ahí estaré!" → "si ahi estare", "I'll" → "ill")."""
    for emoji, word in _EMOJI_WORDS.items():
        text = text.replace(emoji, word)
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"['’`]", "", text)
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _phrases(data: Mapping[str, object], key: str) -> tuple[str, ...]:
    values = data.get(key) or []
    if not isinstance(values, list):
        raise ValueError(f"{key}: expected a list of phrases")
    for value in values:
        if not isinstance(value, str):  # YAML reads a bare yes, no, on or off as a boolean
            raise ValueError(f"{key}: {value!r} is not text; quote it")
    return tuple(normalize(v) for v in values)


def _sections(data: Mapping[str, object], key: str) -> dict[str, tuple[str, ...]]:
    """A mapping of named phrase lists (`availability:`), each normalised like the others."""
    section = data.get(key) or {}
    if not isinstance(section, dict):
        raise ValueError(f"{key}: expected a mapping of phrase lists")
    try:
        return {str(name): _phrases(section, name) for name in section}
    except ValueError as exc:
        raise ValueError(f"{key}.{exc}") from None


def load_phrasebook(path: Path) -> Phrasebook:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    answers = data.get("answers") or {}
    lists = {name: _phrases(data, name) for name in Phrasebook.__dataclass_fields__
             if name not in ("language", "answers", "availability")}
    return Phrasebook(language=path.stem, answers={str(k): str(v) for k, v in answers.items()},
                      availability=_sections(data, "availability"),
                      **lists)


@cache
def phrasebooks(folder: Path = PHRASEBOOKS) -> tuple[Phrasebook, ...]:
    """Every shipped language, English first (the answer language when nothing else is known)."""
    books = [load_phrasebook(p) for p in sorted(folder.glob("*.yaml"))]
    return tuple(sorted(books, key=lambda b: b.language != "en"))


def _contains(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {text} "


def _first(books: Iterable[Phrasebook], text: str, whole: bool,
           *lists: str) -> tuple[str, str] | None:
    """(language, phrase) of the first phrase found: the whole reply, or anywhere in it."""
    for book in books:
        for name in lists:
            for phrase in getattr(book, name):
                if (text == phrase) if whole else _contains(text, phrase):
                    return book.language, phrase
    return None


def _without(books: tuple[Phrasebook, ...], text: str, *lists: str) -> str:
    """The text with every phrase of these lists taken out (whole words)."""
    for book in books:
        for name in lists:
            for phrase in getattr(book, name):
                text = " ".join(f" {text} ".replace(f" {phrase} ", " ").split())
    return text


def _core(books: tuple[Phrasebook, ...], text: str) -> str:
    """The reply without politeness ("STOP please" → "stop"), unless that leaves nothing."""
    return _without(books, text, "filler") or text


def _cancelling(books: tuple[Phrasebook, ...], text: str) -> tuple[str, str] | None:
    """A cancellation of the visit: a cancel phrase, or a cancel word with an appointment word
    ("cancel tomorrow's appointment", "cancelen mi cita")."""
    found = _first(books, text, False, "cancel_phrases")
    if found is not None:
        return found
    word = _first(books, text, False, "cancel_words")
    if word is not None and _first(books, text, False, "appointment_words") is not None:
        return word[0], f"{word[1]} … appointment"
    return None


def _opt_out(books: tuple[Phrasebook, ...], text: str) -> Reply | None:
    """The FCC's words anywhere (unless inside a phrase that means something else, such as
    "cancel my appointment"), or a reasonable opt-out phrasing."""
    found = _first(books, text, False, "opt_out_phrases")
    if found is not None:
        return Reply("stop", rule=f"opt-out phrase {found[1]!r}", language=found[0])
    lists = ("not_opt_out", "cancel_words") if _cancelling(books, text) else ("not_opt_out",)
    stripped = _without(books, text, *lists)
    found = _first(books, stripped, False, "opt_out_anywhere")
    if found is not None:
        return Reply("stop", rule=f"opt-out word {found[1]!r} in the reply", language=found[0])
    return None


def _keyword(books: tuple[Phrasebook, ...], text: str, replies: Mapping[str, str],
             opted_out: bool) -> Reply | None:
    """Replies that are one keyword: an opt-out word, the step's own reply keys, opt-in, help."""
    text = _core(books, text)
    compact = text.replace(" ", "")
    found = _first(books, text, True, "opt_out_anywhere", "opt_out_whole") or _first(
        books, compact, True, "opt_out_anywhere", "opt_out_whole")
    if found is not None:
        return Reply("stop", rule=f"the reply is the opt-out word {found[1]!r}",
                     language=found[0])
    for key, action in replies.items():
        if compact == normalize(key):
            return _act(action, f"the step's reply key {key!r}", None)
    found = _first(books, text, True, "opt_in_whole")
    if found is not None:
        return Reply("start", rule=f"the reply is the opt-in word {found[1]!r}", language=found[0])
    yes = _first(books, text, True, "confirm_whole")
    if yes is not None and opted_out:
        return Reply("start", rule=f"{yes[1]!r} from an opted-out number re-subscribes it",
                     language=yes[0])
    found = _first(books, text, True, "help_whole")
    if found is not None:
        return Reply("help", rule=f"the reply is {found[1]!r}", language=found[0])
    return None


def _act(action: str, rule: str, language: str | None) -> Reply:
    intent: Intent = ("confirm" if action == "confirm" else "cancel" if action in _CANCEL_ACTIONS
                      else "reschedule" if action in ("reschedule", "book") else "text")
    return Reply(intent, action=action, rule=rule, language=language)


def _meaning(books: tuple[Phrasebook, ...], text: str,
             replies: Mapping[str, str]) -> Reply | None:
    """Confirm, cancel or reschedule in the patient's words; two of them at once is ambiguous."""
    found = {
        "confirm": _first(books, _core(books, text), True, "confirm_whole")
        or _first(books, text, False, "confirm_phrases"),
        "cancel": _cancelling(books, text),
        "reschedule": _first(books, text, False, "reschedule_phrases"),
    }
    if found["cancel"] and found["reschedule"]:
        found["cancel"] = None  # "cancel and find me another day" asks for a new time
    leading_yes = _first(books, text.split(" ", 1)[0], True, "confirm_whole")
    if found["confirm"] is None and leading_yes is not None and (
            found["cancel"] or found["reschedule"]):
        found["confirm"] = leading_yes  # "yes, or can we reschedule?" means two things
    matched = {intent: hit for intent, hit in found.items() if hit is not None}
    if len(matched) > 1:
        return Reply("text", rule="ambiguous: " + " and ".join(
            f"{intent} ({hit[1]!r})" for intent, hit in matched.items()))
    if not matched:
        return None
    ((intent, (language, phrase)),) = matched.items()
    actions = set(replies.values())
    if intent == "confirm":
        if "confirm" not in actions and "book" in actions:
            # "Yes" to "time to book your check-up, reply B for times" asks for the times.
            return _act("book", f"yes ({phrase!r}) to an invitation to book", language)
        if "confirm" not in actions:
            return Reply("text", rule=f"a confirmation ({phrase!r}) where the message asked for "
                                      "none", language=language)
        return _act("confirm", f"confirm phrase {phrase!r}", language)
    if intent == "cancel":
        # Cancelled in the EHR only where the journey says so; otherwise staff are asked.
        action = "cancel-appointment" if "cancel-appointment" in actions else "cancel"
        return _act(action, f"cancel phrase {phrase!r}", language)
    wanted = "book" if "book" in actions and "reschedule" not in actions else "reschedule"
    return _act(wanted, f"reschedule phrase {phrase!r}", language)


def _score(text: str, replies: Mapping[str, str],
           score_range: tuple[int, int] | None) -> Reply | None:
    if score_range is None and "score" in replies.values():
        score_range = (0, 10)
    match = _SCORE.match(text)
    if score_range is None or match is None:
        return None
    value, (low, high) = int(match.group(1)), score_range
    return Reply("score", value, action="score", rule=f"a score of {value}") \
        if low <= value <= high else None


def classify(body: str, replies: Mapping[str, str] | None = None,
             score_range: tuple[int, int] | None = None, *, opted_out: bool = False,
             books: tuple[Phrasebook, ...] | None = None) -> Reply:
    """Read a reply in the context of the message it answers (`replies`: that step's keyword →
    action map; `score_range`: its survey). In order: nothing to read; a one-word keyword (an
    opt-out word always wins, then the step's own keys, opt-in — YES only from an opted-out
    number —, help); a score where one is asked; an opt-out anywhere in the reply (the law:
    "any reasonable manner"); confirm / cancel / reschedule in the patient's words; else free
    text, which staff read."""
    books = books if books is not None else phrasebooks()
    text, replies = normalize(body[:MAX_READ]), replies or {}
    if not text:
        return Reply("empty", rule="nothing to read in the reply")
    return (_keyword(books, text, replies, opted_out) or _score(text, replies, score_range)
            or _opt_out(books, text) or _meaning(books, text, replies)
            or Reply("text", rule="no rule matched: free text for staff"))
