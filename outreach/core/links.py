"""Signed, expiring links a patient follows from a message to their own preference page, with
no login: the link names the patient and the language, and only we can make one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PATIENT_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TOKEN = re.compile(r"([A-Za-z0-9_-]{4,120})\.([A-Za-z0-9_-]{22})")
_LANGUAGE = re.compile(r"[a-z]{2}")
_SIGNATURE_BYTES = 16  # 128 bits: enough against forgery, short enough for a text message


class BadLink(Exception):
    """Not a link we made (`invalid`), or one past its date (`expired`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LinkClaims:
    patient: str  # "Patient/<id>"
    language: str
    expires: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, b"preferences-link|" + payload.encode("ascii"), hashlib.sha256)
    return _b64(digest.digest()[:_SIGNATURE_BYTES])


def sign(secret: bytes, patient: str, language: str, now: datetime, valid: timedelta) -> str:
    """A token for `/p/{token}`; `patient` is "Patient/<id>"."""
    patient_id = patient.removeprefix("Patient/")
    if not PATIENT_ID.fullmatch(patient_id) or not _LANGUAGE.fullmatch(language):
        raise ValueError("a preference link needs a Patient id and a two-letter language")
    expires = int((now + valid).timestamp())
    payload = _b64(f"{patient_id}|{language}|{expires:x}".encode("ascii"))
    return f"{payload}.{_signature(secret, payload)}"


def verify(secret: bytes, token: str, now: datetime) -> LinkClaims:
    """The claims of a genuine, unexpired token; the signature is checked before anything in
    the payload is read."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise BadLink("invalid")
    payload, signature = match.groups()
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise BadLink("invalid")
    try:
        patient_id, language, expires_hex = _unb64(payload).decode("ascii").split("|")
        expires = datetime.fromtimestamp(int(expires_hex, 16), UTC)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise BadLink("invalid") from exc
    if not PATIENT_ID.fullmatch(patient_id) or not _LANGUAGE.fullmatch(language):
        raise BadLink("invalid")
    if expires <= now:
        raise BadLink("expired")
    return LinkClaims(f"Patient/{patient_id}", language, expires)
