"""HL7 v2 SIU/ADT messages → the FHIR R4 resources the FHIR path would deliver, and their ACKs.

Pure: parsing (python-hl7), mapping and ACK building; storing is the caller's job. Every
resource carries meta.versionId = the message control id (MSH-10) and meta.lastUpdated = the
message time (MSH-7), so ingest orders versions by message time and a resent message is the
same versions again, recorded once."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import hl7

from connector.errors import InvalidResource
from connector.resources import validate_resource

MAX_MESSAGE_BYTES = 1024 * 1024  # larger than any scheduling message; refused with AR

# What each trigger event means for the appointment; None: status from SCH-25 (default booked).
SIU_EVENTS: dict[str, str | None] = {
    "S12": None, "S13": None, "S14": None,  # book, reschedule, modify
    "S15": "cancelled", "S17": "cancelled",  # cancel, delete
    "S26": "noshow",
}
ADT_EVENTS = ("A03", "A04")  # discharge, registration

# SCH-25 filler status (HL7 table 0278) → Appointment.status.
_FILLER_STATUS = {
    "booked": "booked", "overbook": "booked", "pending": "pending", "waitlist": "waitlist",
    "cancelled": "cancelled", "dc": "cancelled", "deleted": "entered-in-error",
    "noshow": "noshow", "complete": "fulfilled", "started": "arrived",
}
_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other"}
_PHONE_USE = {"PRN": "home", "WPN": "work", "ORN": "home", "VHN": "home", "PRS": "mobile",
              "EMR": "temp"}
_ENCOUNTER_CLASS = {"I": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"),
                    "E": ("EMER", "emergency"), "P": ("PRENC", "pre-admission")}
# ISO 639-2 codes some senders use in PID-15, for the few languages templates commonly carry.
_LANGUAGE_3 = {"eng": "en", "spa": "es", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de",
               "ita": "it", "por": "pt", "zho": "zh", "chi": "zh", "vie": "vi", "rus": "ru",
               "ara": "ar", "kor": "ko", "jpn": "ja", "pol": "pl", "nld": "nl", "dut": "nl"}
_BCP47 = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?")
_NAMESPACE = re.compile(r"[A-Za-z0-9.\-]{1,40}")
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SOURCE = "hl7v2"


class Hl7Rejected(Exception):
    """A message we cannot use: `ack_code` AR (not acceptable at all) or AE (its content is
    wrong), `error_code` from HL7 table 0357, `reason` for MSA-3 / ERR-3 (ids only)."""

    def __init__(self, ack_code: str, error_code: str, reason: str) -> None:
        super().__init__(reason)
        self.ack_code, self.error_code, self.reason = ack_code, error_code, reason


@dataclass(frozen=True, slots=True)
class Header:
    """The MSH fields an ACK echoes and ingest orders by."""

    control_id: str
    message_type: str  # SIU, ADT
    event: str  # S12, A04, ...
    sent_at: datetime
    sending: tuple[str, str]  # application, facility
    receiving: tuple[str, str]
    processing_id: str
    version: str


@dataclass(frozen=True, slots=True)
class Mapped:
    """A message as resource versions, in the order to ingest them (Patient first)."""

    header: Header
    resources: list[dict[str, Any]]


# -- parsing ----------------------------------------------------------------------------------

def parse(block: bytes) -> hl7.Message:
    """One MLLP block as an HL7 message; Hl7Rejected(AR) when it is not one."""
    if len(block) > MAX_MESSAGE_BYTES:
        raise Hl7Rejected("AR", "100", f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")  # HL7 v2's usual 8-bit charset; every byte decodes
    if "\x00" in text:
        raise Hl7Rejected("AR", "100", "message holds a NUL character")
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Rejected("AR", "100", "not an HL7 v2 message: it does not begin with MSH")
    try:
        return hl7.parse(text)
    except Exception as exc:  # the library raises several types for malformed text
        raise Hl7Rejected("AR", "100", "not an HL7 v2 message: "
                          f"{type(exc).__name__}") from exc


def _get(msg: hl7.Message, segment: str, field: int, comp: int = 1, rep: int = 1) -> str:
    """One component's text, '' when absent (python-hl7 raises for missing parts)."""
    try:
        value = msg[f"{segment}.F{field}.R{rep}.C{comp}"]
    except (IndexError, KeyError, ValueError):
        return ""
    return str(value or "").strip()


def _has(msg: hl7.Message, segment: str) -> bool:
    try:
        msg.segment(segment)
    except KeyError:
        return False
    return True


def _timestamp(value: str, zone: tzinfo) -> datetime | None:
    """An HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) as an aware datetime; a time
    without an offset is the facility's local time (`zone`)."""
    found = _TS.fullmatch(value)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    try:
        when = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                        int(minute or 0), int(second or 0),
                        int(float(fraction) * 1_000_000) if fraction else 0)
    except ValueError:
        return None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return when.replace(tzinfo=UTC) - sign * delta
    return when.replace(tzinfo=zone)


def _instant(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def header(msg: hl7.Message, zone: tzinfo) -> Header:
    """The MSH fields; Hl7Rejected(AE) when MSH-7, MSH-9 or MSH-10 is missing."""
    control_id = _get(msg, "MSH", 10)
    message_type, event = _get(msg, "MSH", 9, 1), _get(msg, "MSH", 9, 2)
    if not control_id:
        raise Hl7Rejected("AE", "101", "MSH-10 (message control id) is missing")
    if not message_type or not event:
        raise Hl7Rejected("AE", "101", "MSH-9 (message type^trigger event) is missing")
    sent_at = _timestamp(_get(msg, "MSH", 7), zone)
    if sent_at is None:
        raise Hl7Rejected("AE", "102", "MSH-7 (date/time of message) is missing or not a TS")
    return Header(control_id=control_id[:199], message_type=message_type.upper()[:3],
                  event=event.upper()[:3], sent_at=sent_at,
                  sending=(_get(msg, "MSH", 3), _get(msg, "MSH", 4)),
                  receiving=(_get(msg, "MSH", 5), _get(msg, "MSH", 6)),
                  processing_id=_get(msg, "MSH", 11) or "P", version=_get(msg, "MSH", 12))


# -- identifiers ------------------------------------------------------------------------------

def _stable_id(kind: str, namespace: str, value: str) -> str:
    """A FHIR id (`[A-Za-z0-9-.]{1,64}`) that is the same for the same v2 identifier."""
    digest = hashlib.sha256(f"{kind}\x1f{namespace}\x1f{value}".encode()).hexdigest()[:40]
    return f"hl7-{digest}"


def version_id(control_id: str) -> str:
    """meta.versionId for a message: the control id when it is a FHIR id, else its hash."""
    if re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", control_id, re.ASCII) and control_id not in (
            ".", ".."):
        return control_id
    return "h-" + hashlib.sha256(control_id.encode()).hexdigest()[:40]


def _identifier(namespace: str, value: str, type_code: str | None = None) -> dict[str, Any]:
    ident: dict[str, Any] = {"value": value}
    if _NAMESPACE.fullmatch(namespace):
        ident["system"] = f"urn:hl7v2:{namespace}"
    if type_code:
        ident["type"] = {"coding": [{"system": _V2_0203, "code": type_code}]}
    return ident


def _meta(head: Header) -> dict[str, Any]:
    return {"versionId": version_id(head.control_id), "lastUpdated": _instant(head.sent_at)}


# -- PID → Patient ----------------------------------------------------------------------------

def _patient_key(msg: hl7.Message) -> tuple[str, str, str]:
    """(namespace, id, identifier type) of the PID-3 repetition to key on: the MR one if any."""
    first: tuple[str, str, str] | None = None
    for rep in range(1, 11):
        value = _get(msg, "PID", 3, 1, rep)
        if not value:
            if rep == 1 or first is not None:
                break
            continue
        key = (_get(msg, "PID", 3, 4, rep), value, _get(msg, "PID", 3, 5, rep))
        if key[2].upper() == "MR":
            return key
        first = first or key
    if first is None:
        raise Hl7Rejected("AE", "101", "PID-3 (patient identifier) is missing")
    return first


def _telecom(msg: hl7.Message) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for rep in range(1, 11):
        parts = {c: _get(msg, "PID", 13, c, rep) for c in (1, 2, 3, 4, 5, 6, 7, 12)}
        if not any(parts.values()):
            break
        use_code, equipment = parts[2].upper(), parts[3].upper()
        if parts[4] or equipment in ("INTERNET", "X.400") or use_code == "NET":
            if parts[4]:
                points.append({"system": "email", "value": parts[4][:256]})
            continue
        number = parts[12] or (
            ("+" + parts[5] if parts[5] else "") + parts[6] + parts[7]) or parts[1]
        number = re.sub(r"[^0-9+]", "", number)[:32]
        if not number:
            continue
        point: dict[str, Any] = {"system": "fax" if equipment == "FX" else "phone",
                                 "value": number}
        use = "mobile" if equipment == "CP" else _PHONE_USE.get(use_code)
        if use:
            point["use"] = use
        points.append(point)
    return points


def _language(msg: hl7.Message) -> dict[str, Any] | None:
    code = _get(msg, "PID", 15, 1)
    text = _get(msg, "PID", 15, 2)
    code = _LANGUAGE_3.get(code.lower(), code)
    if not _BCP47.fullmatch(code):
        return None
    concept: dict[str, Any] = {"coding": [{"system": "urn:ietf:bcp:47", "code": code.lower()}]}
    if text:
        concept["text"] = text[:100]
    return {"language": concept, "preferred": True}


def _birth_date(value: str) -> str | None:
    found = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?", value[:8])
    if found is None:
        return None
    year, month, day = found.groups()
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    return "-".join(p for p in (year, month, day) if p)


def patient(msg: hl7.Message, head: Header) -> dict[str, Any]:
    """The Patient a PID segment describes; Hl7Rejected(AE) without PID or PID-3."""
    if not _has(msg, "PID"):
        raise Hl7Rejected("AE", "100", "PID segment is missing")
    namespace, value, type_code = _patient_key(msg)
    resource: dict[str, Any] = {
        "resourceType": "Patient", "id": _stable_id("Patient", namespace, value),
        "meta": _meta(head),
        "identifier": [_identifier(namespace, value, type_code.upper() or None)],
    }
    family, given = _get(msg, "PID", 5, 1), [
        g for g in (_get(msg, "PID", 5, 2), _get(msg, "PID", 5, 3)) if g]
    if family or given:
        name: dict[str, Any] = {"use": "official"}
        if family:
            name["family"] = family
        if given:
            name["given"] = given
        resource["name"] = [name]
    if gender := _GENDER.get(_get(msg, "PID", 8).upper()):
        resource["gender"] = gender
    if born := _birth_date(_get(msg, "PID", 7)):
        resource["birthDate"] = born
    if telecom := _telecom(msg):
        resource["telecom"] = telecom
    if language := _language(msg):
        resource["communication"] = [language]
    return resource


# -- SCH/AIS/AIL/AIP → Appointment ------------------------------------------------------------

def _duration(amount: str, units: str) -> timedelta | None:
    """A duration from a number and its unit (ISO+ / ANSI codes: S, M or MIN, H, D)."""
    try:
        number = float(amount)
    except ValueError:
        return None
    if not 0 < number < 100_000:
        return None
    unit = units.upper()
    if unit in ("S", "SEC", "S.", "SECOND", "SECONDS"):
        return timedelta(seconds=number)
    if unit in ("H", "HR", "HOUR", "HOURS"):
        return timedelta(hours=number)
    if unit in ("D", "DAY", "DAYS"):
        return timedelta(days=number)
    return timedelta(minutes=number)  # M, MIN and unlabelled: minutes, the common unit


def _timing(msg: hl7.Message, zone: tzinfo) -> tuple[datetime | None, datetime | None]:
    """Start and end: SCH-11 (TQ start/end), else the first resource segment with a start."""
    start = _timestamp(_get(msg, "SCH", 11, 4), zone)
    end = _timestamp(_get(msg, "SCH", 11, 5), zone)
    length = _duration(_get(msg, "SCH", 9), _get(msg, "SCH", 10)) if _get(msg, "SCH", 9) else None
    for segment, at, amount, units in (("AIS", 4, 7, 8), ("AIL", 6, 9, 10), ("AIP", 6, 9, 10)):
        if start is not None:
            break
        if _has(msg, segment):
            start = _timestamp(_get(msg, segment, at), zone)
            if start is not None and length is None and _get(msg, segment, amount):
                length = _duration(_get(msg, segment, amount), _get(msg, segment, units, 1))
    if end is None and start is not None and length is not None:
        end = start + length
    return start, end


def _participants(msg: hl7.Message, patient_id: str) -> list[dict[str, Any]]:
    people: list[dict[str, Any]] = [{"actor": {"reference": f"Patient/{patient_id}"},
                                     "required": "required", "status": "accepted"}]
    if _has(msg, "AIL"):
        point, facility = _get(msg, "AIL", 3, 1), _get(msg, "AIL", 3, 4)
        if point or facility:
            people.append({"actor": {
                "reference": f"Location/{_stable_id('Location', facility, point)}",
                "display": (_get(msg, "AIL", 3, 9)
                            or " ".join(p for p in (facility, point) if p))[:200]},
                "required": "required", "status": "accepted"})
    if _has(msg, "AIP"):
        person = _get(msg, "AIP", 3, 1)
        if person:
            display = " ".join(p for p in (_get(msg, "AIP", 3, 3),
                                           _get(msg, "AIP", 3, 2)) if p)
            actor: dict[str, Any] = {
                "reference": f"Practitioner/{_stable_id('Practitioner', '', person)}"}
            if display:
                actor["display"] = display[:200]
            people.append({"actor": actor, "required": "required", "status": "accepted"})
    return people


def appointment(msg: hl7.Message, head: Header, patient_id: str,
                zone: tzinfo) -> dict[str, Any]:
    """The Appointment an SIU message describes; Hl7Rejected(AE) for missing SCH fields."""
    if not _has(msg, "SCH"):
        raise Hl7Rejected("AE", "100", "SCH segment is missing")
    filler, filler_ns = _get(msg, "SCH", 2, 1), _get(msg, "SCH", 2, 2)
    placer, placer_ns = _get(msg, "SCH", 1, 1), _get(msg, "SCH", 1, 2)
    if not filler and not placer:
        raise Hl7Rejected("AE", "101", "SCH-1 and SCH-2 (appointment ids) are both missing")
    key = ("filler", filler_ns, filler) if filler else ("placer", placer_ns, placer)
    status = SIU_EVENTS[head.event] or _FILLER_STATUS.get(
        _get(msg, "SCH", 25, 1).lower() or "booked", "booked")
    start, end = _timing(msg, zone)
    if start is None and status not in ("cancelled", "noshow", "entered-in-error"):
        raise Hl7Rejected("AE", "101", "no appointment start (SCH-11.4, AIS-4, AIL-6 or AIP-6)")
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": _stable_id("Appointment", key[1], f"{key[0]}\x1f{key[2]}"),
        "meta": _meta(head), "status": status,
        "identifier": [_identifier(ns, value) for ns, value in
                       ((filler_ns, filler), (placer_ns, placer)) if value],
        "participant": _participants(msg, patient_id),
    }
    if start is not None:
        resource["start"] = _instant(start)
    if end is not None and start is not None and end > start:
        resource["end"] = _instant(end)
    kind = _get(msg, "SCH", 8, 1)
    if kind:
        resource["appointmentType"] = {"coding": [{"code": kind[:64]}]}
    return resource


# -- PV1 → Encounter --------------------------------------------------------------------------

def encounter(msg: hl7.Message, head: Header, patient_id: str, zone: tzinfo) -> dict[str, Any]:
    """The finished Encounter an A03 (discharge) describes; Hl7Rejected(AE) without PV1-19."""
    if not _has(msg, "PV1"):
        raise Hl7Rejected("AE", "100", "PV1 segment is missing")
    visit, visit_ns = _get(msg, "PV1", 19, 1), _get(msg, "PV1", 19, 4)
    if not visit:
        raise Hl7Rejected("AE", "101", "PV1-19 (visit number) is missing")
    code, display = _ENCOUNTER_CLASS.get(_get(msg, "PV1", 2).upper(), ("AMB", "ambulatory"))
    resource: dict[str, Any] = {
        "resourceType": "Encounter", "id": _stable_id("Encounter", visit_ns, visit),
        "meta": _meta(head), "status": "finished",
        "identifier": [_identifier(visit_ns, visit, "VN")],
        "class": {"system": _ACT_CODE, "code": code, "display": display},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    admitted = _timestamp(_get(msg, "PV1", 44), zone)
    discharged = _timestamp(_get(msg, "PV1", 45), zone) or head.sent_at
    period = {"end": _instant(discharged)}
    if admitted is not None and admitted <= discharged:
        period["start"] = _instant(admitted)
    resource["period"] = period
    return resource


# -- the whole message ------------------------------------------------------------------------

def map_message(msg: hl7.Message, zone: tzinfo = UTC) -> Mapped:
    """The validated resource versions a message carries; Hl7Rejected for one we cannot use."""
    head = header(msg, zone)
    if head.message_type == "SIU" and head.event in SIU_EVENTS:
        person = patient(msg, head)
        resources = [person, appointment(msg, head, person["id"], zone)]
    elif head.message_type == "ADT" and head.event == "A04":
        resources = [patient(msg, head)]
    elif head.message_type == "ADT" and head.event == "A03":
        person = patient(msg, head)
        resources = [person, encounter(msg, head, person["id"], zone)]
    else:
        code = "200" if head.message_type not in ("SIU", "ADT") else "201"
        raise Hl7Rejected("AR", code, f"unsupported message {head.message_type}^{head.event}"[:60])
    for resource in resources:
        try:
            validate_resource(resource)
        except InvalidResource as exc:
            raise Hl7Rejected("AE", "102", f"{resource['resourceType']} from this message is "
                              f"not valid FHIR: {str(exc)[:200]}") from exc
    return Mapped(head, resources)


# -- ACK --------------------------------------------------------------------------------------

def _escape(text: str) -> str:
    """Text safe inside one HL7 component (the default ^~\\& delimiters)."""
    text = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    text = text.replace("&", "\\T\\").replace("~", "\\R\\")
    return re.sub(r"[\x00-\x1f\x7f]", " ", text)[:200]


def ack(head: Header | None, code: str, reason: str = "", error_code: str = "",
        now: datetime | None = None) -> bytes:
    """An original-mode ACK (MSH, MSA and, for AE/AR, ERR) for `head`'s message; without a
    header (the message was unreadable) the sender fields and MSA-2 are left empty."""
    when = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    sending, receiving = (head.receiving, head.sending) if head else (("", ""), ("", ""))
    event = head.event if head else ""
    msh = "|".join([
        "MSH", "^~\\&", _escape(sending[0]), _escape(sending[1]), _escape(receiving[0]),
        _escape(receiving[1]), when, "", f"ACK^{_escape(event)}^ACK", uuid.uuid4().hex[:20],
        _escape(head.processing_id) if head else "P", _escape(head.version or "2.5.1")
        if head else "2.5.1"])
    msa = "|".join(["MSA", code, _escape(head.control_id) if head else "", _escape(reason)])
    segments = [msh, msa]
    if code != "AA":
        severity = "E"
        segments.append(f"ERR|||{error_code or '207'}^{_escape(reason)}^HL70357|{severity}")
    return "\r".join(segments).encode("utf-8")
