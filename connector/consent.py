"""A patient's opt-out or opt-in as a FHIR R4 `Consent`, so the EHR and every system reading it
sees what the patient chose, on which channel and address, when and how (pure builder)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.polling import fhir_instant

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC = "http://loinc.org"
# The channel and address the choice is about (R4 Consent has no element for a contact point).
CONTACT_EXTENSION = "http://fhir-outreach.org/StructureDefinition/consent-contact-point"
_CONTACT_SYSTEM = {"sms": "sms", "email": "email"}
_CHANNEL_TEXT = {"sms": "text messages (SMS)", "email": "email"}


@dataclass(frozen=True, slots=True)
class ContactChoice:
    identifier_system: str
    identifier_value: str
    patient: str  # R4 requires a patient on a privacy consent (ppc-2)
    channel: str  # sms | email
    address: str
    opted_out: bool
    at: datetime
    source: str  # keyword | provider | staff | preferences


def build_consent(choice: ContactChoice) -> dict[str, Any]:
    """OPTOUT (provision deny) or OPTIN (provision permit) of outreach on one channel and
    address, from `at` on; how it was made is in the category text."""
    what = _CHANNEL_TEXT.get(choice.channel, choice.channel)
    rule = "OPTOUT" if choice.opted_out else "OPTIN"
    return {
        "resourceType": "Consent",
        "identifier": [{"system": choice.identifier_system, "value": choice.identifier_value}],
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy",
                              "display": "Privacy Consent"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0",
                                  "display": "Patient Consent"}],
                      "text": f"outreach by {what} ({choice.source})"}],
        "patient": {"reference": choice.patient},
        "dateTime": fhir_instant(choice.at),
        "policyRule": {"coding": [{"system": ACT_CODE, "code": rule}],
                       "text": f"{'opted out of' if choice.opted_out else 'opted in to'} {what}"},
        "provision": {"type": "deny" if choice.opted_out else "permit",
                      "period": {"start": fhir_instant(choice.at)}},
        "extension": [{"url": CONTACT_EXTENSION, "valueContactPoint": {
            "system": _CONTACT_SYSTEM.get(choice.channel, "other"), "value": choice.address}}],
    }
