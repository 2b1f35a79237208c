"""The patient preference page's service: open a signed link, read what is set, save what the
patient chose (audited, written back to the EHR, in force for the next send)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from outreach.core.links import LinkClaims, open_with
from outreach.core.ports import Runtime
from outreach.store.preferences import LANGUAGES, Preferences, load
from outreach.writeback.consent import record_preferences
from rules.schema import CONSENT_CATEGORIES

log = logging.getLogger(__name__)

ACTOR = "patient (preference link)"


@dataclass(frozen=True, slots=True)
class Shown:
    """The form as posted, not validated: shown again beside what to fix, so a patient who
    mistyped one time does not lose the other choices they made."""

    language: str | None
    channel: str | None
    quiet_from: str | None
    quiet_to: str | None
    categories_off: frozenset[str]


class FormError(ValueError):
    """The posted form cannot be saved; `field` names what to fix."""

    def __init__(self, field: str, shown: Shown) -> None:
        super().__init__(field)
        self.field = field
        self.shown = shown


def open_link(rt: Runtime, token: str) -> LinkClaims:
    """The claims of a genuine, unexpired link (BadLink: `off`, `invalid`, `expired`)."""
    return open_with(rt.settings.preferences_secret, token, rt.clock.now())


def page_language(claims: LinkClaims) -> str:
    """The language the page starts in: the link's (the one the message was sent in) when the
    page speaks it, else English."""
    return claims.language if claims.language in LANGUAGES else "en"


def current(rt: Runtime, patient: str) -> Preferences:
    with rt.sessions() as session:
        return load(session, patient)


def from_form(form: Mapping[str, str]) -> Preferences:
    """What the patient chose: checked categories are the ones they want."""
    receive = {c for c in CONSENT_CATEGORIES if form.get(f"receive-{c}") == "yes"}
    channel = form.get("channel") or None
    shown = Shown(language=form.get("language") or None,
                  channel=None if channel == "any" else channel,
                  quiet_from=form.get("quiet_from") or None,
                  quiet_to=form.get("quiet_to") or None,
                  categories_off=frozenset(CONSENT_CATEGORIES) - receive)
    try:
        return Preferences(shown.language, shown.channel, shown.quiet_from, shown.quiet_to,
                           shown.categories_off)
    except ValueError as exc:
        raise FormError("quiet" if "quiet" in str(exc) else "form", shown) from exc


def update(rt: Runtime, claims: LinkClaims, new: Preferences) -> list[str]:
    """Save; returns the names of what changed."""
    with rt.sessions() as session:
        # The page starts on the language the message came in (the EHR's): posting it back
        # untouched is no choice to pin over the EHR's, nor a change to tell the chart about.
        unset = load(session, claims.patient).language is None
        if unset and new.language == page_language(claims):
            new = replace(new, language=None)
        changes, rows = record_preferences(session, rt.settings.identifier_system,
                                           claims.patient, new, actor=ACTOR, now=rt.clock.now())
        session.commit()
    rt.enqueue.write_back(rows)
    if changes:
        log.info("preferences of %s changed: %s", claims.patient, ", ".join(sorted(changes)))
    return sorted(changes)
