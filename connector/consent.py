"""A patient's opt-out or opt-in as a FHIR R4 `Consent`, and the outreach choices read back from
the Consents an EHR holds, so the EHR, our service and every other system see one record of
what the patient chose: on which channel and address, for which category, when and how (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.polling import fhir_instant
from rules.changes import parse_instant

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC = "http://loinc.org"
# What the choice is about: one category of outreach, or `all` of it. A Consent carrying this
# coding is read as an outreach choice, whoever wrote it (docs/consent.md).
OUTREACH_CATEGORY = "http://fhir-outreach.org/CodeSystem/outreach-category"
ALL = "all"
# The channel and address the choice is about (R4 Consent has no element for a contact point).
CONTACT_EXTENSION = "http://fhir-outreach.org/StructureDefinition/consent-contact-point"
_CONTACT_SYSTEM = {"sms": "sms", "email": "email"}
_CHANNEL_OF = {"sms": "sms", "phone": "sms", "email": "email"}
_CHANNEL_TEXT = {"sms": "text messages (SMS)", "email": "email"}
_CATEGORY_TEXT = {"appointments": "appointment messages", "surveys": "surveys",
                  "campaigns": "campaigns and greetings", ALL: "outreach"}


@dataclass(frozen=True, slots=True)
class ContactChoice:
    identifier_system: str
    identifier_value: str
    patient: str  # R4 requires a patient on a privacy consent (ppc-2)
    opted_out: bool
    at: datetime
    source: str  # keyword | provider | staff | preferences
    channel: str | None = None  # sms | email; None: every channel
    address: str | None = None
    category: str = ALL  # appointments | surveys | campaigns | all

    @property
    def what(self) -> str:
        if self.channel is not None:
            what = _CHANNEL_TEXT.get(self.channel, self.channel)
            return what if self.category == ALL else f"{_CATEGORY_TEXT[self.category]} by {what}"
        return _CATEGORY_TEXT.get(self.category, self.category)


def build_consent(choice: ContactChoice) -> dict[str, Any]:
    """OPTOUT (provision deny) or OPTIN (provision permit) of outreach, from `at` on; how it was
    made is in the category text."""
    rule = "OPTOUT" if choice.opted_out else "OPTIN"
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "identifier": [{"system": choice.identifier_system, "value": choice.identifier_value}],
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy",
                              "display": "Privacy Consent"}]},
        "category": [
            {"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}],
             "text": f"{choice.what} ({choice.source})"},
            {"coding": [{"system": OUTREACH_CATEGORY, "code": choice.category}]},
        ],
        "patient": {"reference": choice.patient},
        "dateTime": fhir_instant(choice.at),
        "policyRule": {"coding": [{"system": ACT_CODE, "code": rule}],
                       "text": f"{'opted out of' if choice.opted_out else 'opted in to'} "
                               f"{choice.what}"},
        "provision": {"type": "deny" if choice.opted_out else "permit",
                      "period": {"start": fhir_instant(choice.at)}},
    }
    if choice.channel is not None and choice.address is not None:
        consent["extension"] = [{"url": CONTACT_EXTENSION, "valueContactPoint": {
            "system": _CONTACT_SYSTEM.get(choice.channel, "other"), "value": choice.address}}]
    return consent


@dataclass(frozen=True, slots=True)
class EhrChoice:
    """An outreach choice found in the EHR; None for channel or address means any."""

    category: str
    channel: str | None
    address: str | None
    opted_out: bool
    at: datetime

    def covers(self, category: str, channel: str | None, address: str | None) -> bool:
        """Whether this choice is about that category, channel and address (None: any, which
        only a choice about any covers)."""
        return (self.category in (ALL, category)
                and self.channel in (None, channel)
                and self.address in (None, address))


def _category(consent: dict[str, Any]) -> str | None:
    for concept in consent.get("category") or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == OUTREACH_CATEGORY and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None


def _contact(consent: dict[str, Any]) -> tuple[str | None, str | None]:
    for extension in consent.get("extension") or []:
        if extension.get("url") == CONTACT_EXTENSION:
            point = extension.get("valueContactPoint") or {}
            system, value = point.get("system"), point.get("value")
            channel = _CHANNEL_OF.get(system, system) if isinstance(system, str) else None
            return channel, str(value) if value is not None else None
    return None, None


def _instant(value: Any) -> datetime | None:
    try:
        return parse_instant(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _in_force(consent: dict[str, Any], now: datetime) -> bool:
    period = (consent.get("provision") or {}).get("period") or {}
    start, end = _instant(period.get("start")), _instant(period.get("end"))
    return (start is None or start <= now) and (end is None or now < end)


def ehr_choices(consents: Iterable[dict[str, Any]], now: datetime,
                normalize: Callable[[str, str], str] | None = None) -> list[EhrChoice]:
    """The outreach choices in force among a patient's Consents: active, carrying an
    outreach-category coding, provision deny or permit, in their period. Of several about the
    same category, channel and address, the latest (`dateTime`) holds. Other Consents (data
    sharing, treatment) are not about outreach and are left alone."""
    latest: dict[tuple[str, str | None, str | None], EhrChoice] = {}
    for consent in consents:
        category = _category(consent)
        kind = (consent.get("provision") or {}).get("type")
        at = _instant(consent.get("dateTime"))
        if (consent.get("status") != "active" or category is None or kind not in ("deny", "permit")
                or at is None or not _in_force(consent, now)):
            continue
        channel, address = _contact(consent)
        if channel is not None and address is not None and normalize is not None:
            address = normalize(channel, address)
        choice = EhrChoice(category, channel, address, kind == "deny", at)
        key = (category, channel, address)
        if key not in latest or latest[key].at <= at:
            latest[key] = choice
    return list(latest.values())


def denied_by(choices: Iterable[EhrChoice], category: str, channel: str,
              address: str) -> EhrChoice | None:
    """The opt-out in force for this message, if any: the latest opt-out covering it (same or
    wider category, channel and address) that no later opt-in lifts. An opt-in lifts only an
    opt-out it covers whole: opting back in to surveys does not undo a STOP at a number (every
    category there), nor does START at a number undo an opt-out of surveys (every channel)."""
    choices = list(choices)

    def lifted(deny: EhrChoice) -> bool:
        return any(not permit.opted_out and permit.at > deny.at
                   and permit.covers(deny.category, deny.channel, deny.address)
                   for permit in choices)

    held = [c for c in choices
            if c.opted_out and c.covers(category, channel, address) and not lifted(c)]
    return max(held, key=lambda c: c.at, default=None)


def patient_with_consents(bundle: dict[str, Any]) -> tuple[dict[str, Any] | None,
                                                           list[dict[str, Any]]]:
    """The Patient and its Consents from `Patient?_id=…&_revinclude=Consent:patient`."""
    patient, consents = None, []
    for entry in bundle.get("entry") or []:
        resource = (entry or {}).get("resource") or {}
        if resource.get("resourceType") == "Patient" and patient is None:
            patient = resource
        elif resource.get("resourceType") == "Consent":
            consents.append(resource)
    return patient, consents


@dataclass(frozen=True, slots=True)
class PreferencesNote:
    identifier_system: str
    identifier_value: str
    patient: str
    at: datetime
    changes: tuple[str, ...]  # "language: en → es", in words a clinician reads


def build_preferences_communication(note: PreferencesNote) -> dict[str, Any]:
    """What the patient changed on the preference page, as a Communication from the patient,
    so the EHR's outreach history shows it next to the messages."""
    return {
        "resourceType": "Communication",
        "identifier": [{"system": note.identifier_system, "value": note.identifier_value}],
        "status": "completed",
        "subject": {"reference": note.patient},
        "sender": {"reference": note.patient},
        "received": fhir_instant(note.at),
        "topic": {"text": "Outreach preferences"},
        "payload": [{"contentString": "The patient changed their message preferences: "
                                      + "; ".join(note.changes) + "."}],
    }
