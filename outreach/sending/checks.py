"""Right before a send: is the step still wanted, and where can the patient be reached?"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.orm import Session

from channels import OutboundMessage
from channels.phones import e164
from channels.templates import TemplateError
from connector.consent import EhrChoice, denied_by, ehr_choices, patient_with_consents
from connector.errors import FhirError, FhirNotFound, FhirUnavailable, FhirUnsupported
from outreach.core.ports import Runtime
from outreach.core.retry import backoff
from outreach.sending import records
from outreach.sending.messages import message_context
from outreach.store import preferences
from outreach.store.consent import normalize, opted_out
from outreach.store.controls import PAUSE_RECHECK
from outreach.store.db import flushed_connection, reads
from outreach.store.ingested import IngestedEhr
from outreach.store.models import Enrollment, ResourceVersion, ScheduledStep, StepState
from rules.caps import CAP_WINDOW, Send, allowed_time, counts_toward_caps
from rules.loader import JourneySet, LoadedJourney
from rules.planner import anchor_time, recheck, shift_out_of_quiet_hours
from rules.recipients import (
    Recipient,
    choose_recipient,
    contact_for,
    patient_timezone,
    preferred_language,
)
from rules.schema import TRIGGER_TIME, QuietHours, Step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ready:
    """Everything needed to send, gathered before the provider is called."""

    channel: str
    to: str
    message: OutboundMessage
    patient: str
    about: str
    category: str
    language: str | None = None  # the message's (None: the default, English)
    variant: str | None = None  # the template an experiment assigned this patient


@dataclass(frozen=True)
class Skip:
    """Not sending now, and what the step becomes. `fresh` is a newer version of the anchor
    resource than the one the step was planned from: the caller hands it to intake so the whole
    enrollment follows it."""

    reason: str
    state: StepState = StepState.SKIPPED
    retry_at: datetime | None = None
    fresh: dict[str, Any] | None = None
    counts: bool = True  # whether this counts as an attempt (a pause does not)


class _NotNow(Exception):
    """Raised by a check deep down; `check` turns it into the Skip it carries."""

    def __init__(self, reason: str, state: StepState = StepState.SKIPPED,
                 retry_at: datetime | None = None, fresh: dict[str, Any] | None = None,
                 *, counts: bool = True) -> None:
        super().__init__(reason)
        self.skip = Skip(reason, state, retry_at, fresh, counts)


def _journey(rt: Runtime, enrollment: Enrollment, step_id: str) -> tuple[LoadedJourney, Step]:
    journey = rt.journeys.by_name(enrollment.journey)
    if journey is None:
        raise _NotNow(f"journey {enrollment.journey} is no longer loaded", StepState.CANCELLED)
    spec = journey.step(step_id)
    if spec is None:
        raise _NotNow(f"step {step_id!r} is no longer in journey {journey.name}",
                      StepState.CANCELLED)
    return journey, spec


def read(rt: Runtime, reference: str, attempts: int) -> dict[str, Any]:
    if rt.ehr is None:
        return _stored(rt, reference)
    rtype, _, rid = reference.partition("/")
    try:
        return rt.ehr.read(rtype, rid)
    except FhirNotFound as exc:
        raise _NotNow(f"{reference} no longer exists", StepState.CANCELLED) from exc
    except FhirError as exc:
        # Cannot re-check (still booked? still reachable?): do not send blind, try later.
        raise _NotNow(f"EHR unavailable: {exc}", StepState.SCHEDULED,
                   rt.clock.now() + backoff(attempts)) from exc


def _stored(rt: Runtime, reference: str) -> dict[str, Any]:
    """Without a FHIR endpoint (resources fed by HL7 v2) the latest version ingested is the
    truth: its status and the patient's contact points came with the messages."""
    rtype, _, rid = reference.partition("/")
    try:
        return IngestedEhr(rt.sessions).read(rtype, rid)
    except FhirNotFound as exc:
        raise _NotNow(f"{reference} no longer exists (deleted, or never stored)",
                      StepState.CANCELLED) from exc


def _spelling(rt: Runtime) -> Callable[[str, str], str]:
    """How addresses are compared: a national number as dialled with the default country code."""
    country_code = rt.settings.default_country_code
    return lambda channel, address: normalize(channel, address, country_code)


def _patient(rt: Runtime, reference: str, attempts: int) -> tuple[dict[str, Any], list[EhrChoice]]:
    """The Patient, and the outreach choices among its Consents in the EHR, in one request
    (`_revinclude`) where the EHR serves that search; a plain read otherwise."""
    if not rt.settings.read_ehr_consent or rt.ehr is None:
        return read(rt, reference, attempts), []
    patient_id = reference.removeprefix("Patient/")
    try:
        bundle = rt.ehr.get("Patient", {"_id": patient_id, "_revinclude": "Consent:patient"})
    except FhirUnavailable as exc:
        raise _NotNow(f"EHR unavailable: {exc}", StepState.SCHEDULED,
                      rt.clock.now() + backoff(attempts)) from exc
    except FhirUnsupported:  # an EHR that serves no searches (the demo's)
        return read(rt, reference, attempts), []
    except FhirError as exc:
        # Refused, not down (no _revinclude, no Consent scope: 400, 403): retrying would never
        # send, so read the Patient alone, as from an EHR that serves no searches.
        log.warning("%s: the EHR refused the search with its Consents (%s); read without them",
                    reference, exc)
        return read(rt, reference, attempts), []
    patient, consents = patient_with_consents(bundle)
    if patient is None:
        raise _NotNow(f"{reference} no longer exists", StepState.CANCELLED)
    return patient, ehr_choices(consents, rt.clock.now(), _spelling(rt))


_FRESH = select(ResourceVersion.resource, ResourceVersion.updated_at).where(
    ResourceVersion.resource_type == bindparam("rtype"),
    ResourceVersion.resource_id == bindparam("rid"), ResourceVersion.deleted.is_(False))


def _fresh_stored(rt: Runtime, reference: str) -> dict[str, Any] | None:
    """The version we ingested, if that was within OUTREACH_RECHECK_FRESH_SECONDS: the EHR would
    answer the same, and asking it costs a round trip the EHR's owner pays for."""
    window = rt.settings.recheck_fresh_seconds
    if window <= 0:
        return None
    rtype, _, rid = reference.partition("/")
    with reads(rt.sessions) as connection:
        row = connection.execute(_FRESH, {"rtype": rtype, "rid": rid}).first()
    if row is None or row.resource is None:
        return None
    updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return dict(row.resource) if rt.clock.now() - updated <= timedelta(seconds=window) else None


def _anchor_and_patient(rt: Runtime, enrollment: Enrollment, attempts: int,
                        ahead: Ahead | None = None
                        ) -> tuple[dict[str, Any], dict[str, Any], list[EhrChoice]]:
    """The anchor resource, the Patient and its Consents as the EHR has them now, in one round
    trip: none for an anchor ingested moments ago (the Patient is still read), one search
    (`_include` of the patient, `_revinclude:iterate` of its Consents) otherwise. An EHR that
    refuses that search gets the plain reads. A chunk's search (`ahead`) answers first."""
    if ahead is not None:
        found = _from_ahead(rt, ahead, enrollment, attempts)
        if found is not None:
            return found
    anchor, patient_ref = enrollment.anchor_reference, enrollment.patient
    stored = _fresh_stored(rt, anchor)
    if stored is not None:
        return stored, *_patient(rt, patient_ref, attempts)
    if anchor == patient_ref:
        patient, choices = _patient(rt, patient_ref, attempts)
        return patient, patient, choices
    combined = _combined(rt, anchor, patient_ref, attempts)
    if combined is not None:
        return combined
    resource = read(rt, anchor, attempts)
    return resource, *_patient(rt, patient_ref, attempts)


def _combined(rt: Runtime, anchor: str, patient_ref: str, attempts: int
              ) -> tuple[dict[str, Any], dict[str, Any], list[EhrChoice]] | None:
    """`{Type}?_id=…&_include={Type}:patient[&_revinclude:iterate=Consent:patient]`; None when
    the EHR cannot answer it (no searches, the parameters refused) or leaves the patient out."""
    if rt.ehr is None:
        return None
    rtype, _, rid = anchor.partition("/")
    params: dict[str, str | int] = {"_id": rid, "_include": f"{rtype}:patient"}
    if rt.settings.read_ehr_consent:
        params["_revinclude:iterate"] = "Consent:patient"
    try:
        bundle = rt.ehr.get(rtype, params)
    except FhirUnavailable as exc:
        raise _NotNow(f"EHR unavailable: {exc}", StepState.SCHEDULED,
                      rt.clock.now() + backoff(attempts)) from exc
    except FhirUnsupported:
        return None
    except FhirError as exc:
        log.warning("%s: the EHR refused the search with its patient (%s); read them apart",
                    anchor, exc.status or type(exc).__name__)
        return None
    resource, patient, consents = None, None, []
    patient_id = patient_ref.removeprefix("Patient/")
    for entry in bundle.get("entry") or []:
        found = (entry or {}).get("resource") if isinstance(entry, dict) else None
        if not isinstance(found, dict):
            continue
        kind, found_id = found.get("resourceType"), found.get("id")
        if kind == rtype and found_id == rid:
            resource = found
        elif kind == "Patient" and found_id == patient_id:
            patient = found
        elif kind == "Consent":
            consents.append(found)
    if resource is None:
        raise _NotNow(f"{anchor} no longer exists", StepState.CANCELLED)
    if patient is None:  # not this anchor's patient any more, or not included: ask for it
        return None
    choices = ehr_choices(consents, rt.clock.now(), _spelling(rt)) \
        if rt.settings.read_ehr_consent else []
    return resource, patient, choices


Found = tuple[dict[str, Any], dict[str, Any], list[EhrChoice]]  # anchor, Patient, choices
# A FHIR id ([A-Za-z0-9-.]{1,64}): nothing else goes into a comma-separated `_id`.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_OF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")


@dataclass
class Ahead:
    """What one search per resource type found for a chunk of steps, by reference: the anchor
    with its Patient and Consents; those a search could not reach (the EHR unavailable: each
    step is retried as a read that failed). An anchor in neither (not searched, or left out of
    the answer) is read on its own, as before: only a read tells a deleted resource (404/410)
    from one a search did not return (an EHR that takes one `_id` value, a security filter)."""

    found: dict[str, Found] = field(default_factory=dict)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # ingested moments ago
    patients: dict[str, tuple[dict[str, Any], list[EhrChoice]]] = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)  # reference -> why


def _from_ahead(rt: Runtime, ahead: Ahead, enrollment: Enrollment, attempts: int
                ) -> Found | None:
    anchor, patient_ref = enrollment.anchor_reference, enrollment.patient
    found = ahead.found.get(anchor)
    if found is not None:
        return found
    person = ahead.patients.get(patient_ref)
    if person is not None and anchor == patient_ref:
        return person[0], *person
    if person is not None and anchor in ahead.stored:
        return ahead.stored[anchor], *person
    why = ahead.down.get(anchor) or ahead.down.get(patient_ref)
    if why is not None:  # cannot re-check (still booked? still reachable?): try later
        raise _NotNow(f"EHR unavailable: {why}", StepState.SCHEDULED,
                      rt.clock.now() + backoff(attempts))
    return None


def look_ahead(rt: Runtime, enrollments: list[Enrollment]) -> Ahead | None:
    """A chunk's re-check reads, one search per resource type instead of one per step:
    `{Type}?_id=a,b,c&_include={Type}:patient&_revinclude:iterate=Consent:patient`, and
    `Patient?_id=…&_revinclude=Consent:patient` for anchors ingested moments ago
    (OUTREACH_RECHECK_FRESH_SECONDS) and journeys anchored on the Patient. None without an EHR
    (the versions ingested are the truth there, read step by step)."""
    if rt.ehr is None or not enrollments:
        return None
    ahead = Ahead(stored=_fresh_stored_many(rt, {e.anchor_reference for e in enrollments}))
    by_type: dict[str, dict[str, str]] = {}  # type -> anchor id -> patient id
    patients: set[str] = set()
    for enrollment in enrollments:
        anchor, patient_ref = enrollment.anchor_reference, enrollment.patient
        rtype, _, rid = anchor.partition("/")
        patient_id = patient_ref.removeprefix("Patient/")
        if not (_FHIR_ID.fullmatch(rid) and _FHIR_ID.fullmatch(patient_id)):
            continue  # read on its own, as before
        if anchor in ahead.stored or anchor == patient_ref:
            patients.add(patient_id)
        else:
            by_type.setdefault(rtype, {})[rid] = patient_id
    for rtype, anchors in sorted(by_type.items()):
        _search_anchors(rt, ahead, rtype, anchors)
    if patients:
        _search_patients(rt, ahead, sorted(patients))
    return ahead


def _search(rt: Runtime, ahead: Ahead, rtype: str, ids: list[str],
            params: dict[str, str | int], refs: list[str]) -> dict[str, Any] | None:
    """One search by `_id`; None (each step then reads on its own) where the EHR cannot answer
    it, and every reference marked down where the EHR is unavailable."""
    assert rt.ehr is not None
    try:
        return rt.ehr.get(rtype, {"_id": ",".join(ids), "_count": len(ids), **params})
    except FhirUnavailable as exc:
        ahead.down.update(dict.fromkeys(refs, str(exc)))
    except FhirUnsupported:
        pass
    except FhirError as exc:
        log.warning("%s: the EHR refused the search of %d by _id (%s); read them apart", rtype,
                    len(ids), exc.status or type(exc).__name__)
    return None


def _entries(bundle: dict[str, Any]) -> tuple[dict[tuple[str, str], dict[str, Any]],
                                              dict[str, list[dict[str, Any]]]]:
    """A searchset's resources by (type, id) and its Consents by patient id."""
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    consents: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle.get("entry") or []:
        found = (entry or {}).get("resource") if isinstance(entry, dict) else None
        if not isinstance(found, dict):
            continue
        kind, found_id = found.get("resourceType"), found.get("id")
        if kind == "Consent":
            match = _PATIENT_OF.search(str((found.get("patient") or {}).get("reference", "")))
            if match is not None:
                consents.setdefault(match.group(1), []).append(found)
        elif isinstance(kind, str) and isinstance(found_id, str):
            resources[(kind, found_id)] = found
    return resources, consents


def _choices(rt: Runtime, consents: list[dict[str, Any]]) -> list[EhrChoice]:
    if not rt.settings.read_ehr_consent:
        return []
    return ehr_choices(consents, rt.clock.now(), _spelling(rt))


def _search_anchors(rt: Runtime, ahead: Ahead, rtype: str, anchors: dict[str, str]) -> None:
    params: dict[str, str | int] = {"_include": f"{rtype}:patient"}
    if rt.settings.read_ehr_consent:
        params["_revinclude:iterate"] = "Consent:patient"
    ids = sorted(anchors)
    refs = [f"{rtype}/{rid}" for rid in ids]
    refs += [f"Patient/{pid}" for pid in anchors.values()]
    bundle = _search(rt, ahead, rtype, ids, params, refs)
    if bundle is None:
        return
    resources, consents = _entries(bundle)
    for rid, patient_id in anchors.items():
        resource = resources.get((rtype, rid))
        patient = resources.get(("Patient", patient_id))
        # Left out, or not this anchor's patient any more: read on its own (a read tells a
        # deleted resource from one the search did not return).
        if resource is not None and patient is not None:
            ahead.found[f"{rtype}/{rid}"] = (resource, patient,
                                             _choices(rt, consents.get(patient_id, [])))


def _search_patients(rt: Runtime, ahead: Ahead, ids: list[str]) -> None:
    params: dict[str, str | int] = {}
    if rt.settings.read_ehr_consent:
        params["_revinclude"] = "Consent:patient"
    bundle = _search(rt, ahead, "Patient", ids, params, [f"Patient/{pid}" for pid in ids])
    if bundle is None:
        return
    resources, consents = _entries(bundle)
    for pid in ids:
        patient = resources.get(("Patient", pid))
        if patient is not None:  # a Patient left out is read on its own (gone or not)
            ahead.patients[f"Patient/{pid}"] = (patient, _choices(rt, consents.get(pid, [])))


_FRESH_MANY = select(ResourceVersion.resource_type, ResourceVersion.resource_id,
                     ResourceVersion.resource, ResourceVersion.updated_at).where(
    tuple_(ResourceVersion.resource_type, ResourceVersion.resource_id).in_(
        bindparam("refs", expanding=True)), ResourceVersion.deleted.is_(False))


def _fresh_stored_many(rt: Runtime, references: set[str]) -> dict[str, dict[str, Any]]:
    """`_fresh_stored` for a chunk's anchors, in one query."""
    window = rt.settings.recheck_fresh_seconds
    if window <= 0 or not references:
        return {}
    pairs = [tuple(ref.partition("/")[::2]) for ref in sorted(references)]
    with reads(rt.sessions) as connection:
        rows = connection.execute(_FRESH_MANY, {"refs": pairs}).all()
    fresh = {}
    for row in rows:
        updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
        if row.resource is not None and rt.clock.now() - updated <= timedelta(seconds=window):
            fresh[f"{row.resource_type}/{row.resource_id}"] = dict(row.resource)
    return fresh


def _still_wanted(rt: Runtime, journey: LoadedJourney, enrollment: Enrollment,
                  resource: dict[str, Any]) -> None:
    now = rt.clock.now()
    reason = recheck(journey, resource, now)
    if reason is not None:
        state = StepState.CANCELLED if reason.startswith("cancel_when") else StepState.SKIPPED
        raise _NotNow(reason, state, fresh=resource)
    anchor = anchor_time(journey, resource, now)
    if journey.spec.anchor != TRIGGER_TIME and anchor != enrollment.anchor_at:
        # Back to scheduled: ingesting the fresh version re-plans it with the others.
        raise _NotNow("anchor moved", StepState.SCHEDULED, fresh=resource)


def _related_persons(rt: Runtime, patient: str) -> list[dict[str, Any]]:
    if rt.ehr is None:
        return []
    try:
        return list(rt.ehr.search("RelatedPerson", {"patient": patient, "_count": 50}))
    except FhirError:
        return []  # Patient.contact still names caregivers; RelatedPerson is a refinement


def _undialable(number: str, country_code: str | None) -> str:
    if country_code is None and e164(number, "1") is not None:  # a national number
        return ("sms number cannot be dialled: no country code, and "
                "OUTREACH_DEFAULT_COUNTRY_CODE is not set")
    return "sms number cannot be dialled"


def _recipients(rt: Runtime, journey: LoadedJourney, spec: Step, step: ScheduledStep,
                patient_ref: str, patient: dict[str, Any]) -> tuple[list[Recipient], list[str]]:
    """Who can receive this step, one per usable channel, in the step's order of preference;
    and why a channel the recipient has was dropped."""
    mode = spec.recipient or journey.spec.recipient
    excluded = set(filter(None, step.excluded_channels.split(",")))
    related = _related_persons(rt, patient_ref) if mode != "patient" else None
    found, notes = [], []
    for channel in spec.channel:
        if channel in rt.channels and channel not in excluded:
            recipient = choose_recipient(mode, patient, [channel], rt.clock.now(), related)
            if recipient is not None and channel == "sms":
                # One spelling for Twilio and for the opt-out records: E.164.
                number = e164(recipient.address, rt.settings.default_country_code)
                if number is None:
                    notes.append(_undialable(recipient.address,
                                             rt.settings.default_country_code))
                recipient = replace(recipient, address=number) if number else None
            if recipient is not None:
                found.append(recipient)
    return found, notes


def _personal(prefs: preferences.Preferences,
              recipients: list[Recipient]) -> tuple[list[Recipient], QuietHours | None]:
    """The patient's own choices over the journey's: their channel first, their language (for
    messages to them, not to a caregiver), their quiet hours."""
    if prefs.channel is not None:
        recipients = sorted(recipients, key=lambda r: r.channel != prefs.channel)
    if prefs.language is not None:
        recipients = [r if r.to_caregiver else replace(r, language=prefs.language)
                      for r in recipients]
    quiet = None
    if prefs.quiet_from is not None:
        quiet = QuietHours.model_validate({"from": prefs.quiet_from, "to": prefs.quiet_to})
    return recipients, quiet


# Built once: every send-time check asks what the patient was sent lately.
_SENT_RECENTLY = select(
    ScheduledStep.sent_at, ScheduledStep.channel, ScheduledStep.step_id, Enrollment.journey
).join(Enrollment, ScheduledStep.enrollment_id == Enrollment.id).where(
    Enrollment.patient == bindparam("patient"), ScheduledStep.state == StepState.SENT,
    ScheduledStep.sent_at >= bindparam("since"))
_SENT_RECENTLY_BUT = _SENT_RECENTLY.where(ScheduledStep.id != bindparam("exclude"))


def sent_recently(session: Session, patient: str, now: datetime, journeys: JourneySet,
                  exclude_step: int | None = None) -> list[Send]:
    """What the patient was actually sent in the last cap window (the send-time re-check counts
    only these: planned steps of other journeys do not hold this one back)."""
    query = _SENT_RECENTLY if exclude_step is None else _SENT_RECENTLY_BUT
    rows = flushed_connection(session).execute(
        query, {"patient": patient, "since": now - CAP_WINDOW, "exclude": exclude_step})
    sends = []
    for at, channel, step_id, journey in rows:
        spec = journeys.step(journey, step_id)
        if at is not None:
            sends.append(Send(at, channel or "sms", spec is not None and spec.cap_exempt))
    return sends


def _not_now(rt: Runtime, journey: LoadedJourney, spec: Step, channel: str,
             sent: list[Send], zone: ZoneInfo, personal: QuietHours | None) -> None:
    """Quiet hours (the journey's and the patient's own) and frequency caps, re-checked at send
    time: a retried or late step must not go out at night or past the cap. Deferrals do not
    count as attempts."""
    now = rt.clock.now()
    windows = [quiet for quiet in (journey.spec.quiet_hours, personal) if quiet is not None]

    def adjust(moment: datetime) -> datetime:
        for _ in range(len(windows) + 1):  # leaving one window can land in the other
            shifted = moment
            for quiet in windows:
                shifted = shift_out_of_quiet_hours(shifted, quiet, zone)
            if shifted == moment:
                break
            moment = shifted
        return moment

    later = adjust(now)
    policy = rt.settings.cap_policy
    if counts_toward_caps([channel], spec.cap_exempt, policy):
        later = allowed_time(now, sent, zone, policy, adjust)
    if later > now + timedelta(minutes=1):
        why = "quiet hours" if later == adjust(now) else "frequency cap"
        raise _NotNow(f"{why}: deferred", StepState.SCHEDULED, later, counts=False)


def check(rt: Runtime, step: ScheduledStep, enrollment: Enrollment,
          ahead: Ahead | None = None) -> Ready | Skip:
    """Re-check what may have changed since the step was planned, then pick the first listed
    channel that is configured, not excluded by an earlier permanent failure, on which the
    recipient can be reached and has not opted out; then quiet hours and caps. `ahead` is what
    one search found for the step's whole chunk (`look_ahead`)."""
    try:
        return _check(rt, step, enrollment, ahead)
    except _NotNow as not_now:
        return not_now.skip


def _check(rt: Runtime, step: ScheduledStep, enrollment: Enrollment, ahead: Ahead | None) -> Ready:
    journey, spec = _journey(rt, enrollment, step.step_id)
    resource, patient, choices = _anchor_and_patient(rt, enrollment, step.attempts, ahead)
    _still_wanted(rt, journey, enrollment, resource)
    zone = patient_timezone(patient) or rt.settings.zone
    recipients, notes = _recipients(rt, journey, spec, step, enrollment.patient, patient)
    category = journey.spec.consent
    # What our own records say, in one statement: paused, the patient's choices, sent lately.
    with reads(rt.sessions) as connection:
        found = records.read(connection, rt.journeys, enrollment.journey, enrollment.patient,
                             [(r.channel, r.address) for r in recipients], rt.clock.now(),
                             step.id)
    if found.paused:
        raise _NotNow("journey paused", StepState.SCHEDULED, rt.clock.now() + PAUSE_RECHECK,
                      counts=False)
    prefs, blocked, sent = found.prefs, found.blocked, found.sent
    if category in prefs.categories_off:
        raise _NotNow(f"patient opted out of {category}")
    recipients, personal_quiet = _personal(prefs, recipients)
    # An experiment's arm: the same for this patient every time (rules.schema.Step.variant_for).
    template = spec.variant_for(f"{enrollment.patient}|{enrollment.journey}|{spec.id}")
    notes += [f"opted out of {channel}" for channel, _ in sorted(blocked)]
    spelling = _spelling(rt)
    for recipient in recipients:
        if (recipient.channel, recipient.address) in blocked:
            continue
        denied = denied_by(choices, category, recipient.channel,
                           spelling(recipient.channel, recipient.address))
        if denied is not None:
            notes.append(f"opted out of {recipient.channel} in the EHR (Consent of "
                         f"{denied.at.date().isoformat()})")
            continue
        _not_now(rt, journey, spec, recipient.channel, sent, zone, personal_quiet)
        context = message_context(rt.settings, patient, resource, enrollment.anchor_at, zone,
                                  recipient.language)
        context["first_name"] = recipient.first_name or context["first_name"]
        # The preference page is the patient's own: no link in a caregiver's message.
        context["preferences_url"] = None if recipient.to_caregiver else \
            rt.settings.preferences_link(enrollment.patient, recipient.language, rt.clock.now())
        try:
            rendered = rt.templates.render(template, recipient.channel, context,
                                           recipient.language)
        except TemplateError as exc:
            raise _NotNow(f"template: {exc}", StepState.FAILED) from exc
        message = OutboundMessage(key=step.uid, to=recipient.address, text=rendered.text,
                                  subject=rendered.subject, html=rendered.html)
        return Ready(recipient.channel, recipient.address, message, enrollment.patient,
                     enrollment.anchor_reference, spec.category,
                     rt.templates.language_of(template, recipient.language),
                     template if spec.variants else None)
    listed = ", ".join(spec.channel)
    detail = "; ".join(notes) or f"configured: {', '.join(sorted(rt.channels))}"
    if step.excluded_channels:
        detail += f"; failed before: {step.excluded_channels.replace(',', ', ')}"
    raise _NotNow(f"no channel the recipient can receive among [{listed}] ({detail})")


@dataclass(frozen=True, slots=True)
class SmsContact:
    """A patient we may text now about a category, outside any journey step (an offered time)."""

    number: str  # E.164
    language: str | None
    zone: ZoneInfo


def sms_contact(rt: Runtime, patient_ref: str, category: str) -> SmsContact | str:
    """The patient's mobile number, language and zone; or why they cannot be texted about
    `category` (no number, opted out here or in the EHR, the EHR unavailable)."""
    try:
        patient, choices = _patient(rt, patient_ref, 0)
    except (_NotNow, FhirError) as exc:
        return f"patient not read: {exc}"
    found = contact_for(patient, "sms", rt.clock.now())
    number = e164(found, rt.settings.default_country_code) if found else None
    if number is None:
        return "no mobile number that can be dialled"
    with rt.sessions() as session:
        prefs = preferences.load(session, patient_ref)
        blocked = opted_out(session, [("sms", number)])
    if blocked or category in prefs.categories_off:
        return f"opted out of sms or of {category}"
    if denied_by(choices, category, "sms", _spelling(rt)("sms", number)) is not None:
        return "opted out in the EHR"
    return SmsContact(number, prefs.language or preferred_language(patient),
                      patient_timezone(patient) or rt.settings.zone)
