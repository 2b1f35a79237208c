"""Signed, expiring links a patient follows from a message to a page of their own (preferences,
the times offered to them), with no login: the link names what it is for (the patient, an offer)
and the language, and only we can make one. Each purpose signs apart, so a link for one page
never opens another."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

PATIENT_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TOKEN = re.compile(r"([A-Za-z0-9_-]{4,120})\.([A-Za-z0-9_-]{22})")
_LANGUAGE = re.compile(r"[a-z]{2}")
_SIGNATURE_BYTES = 16  # 128 bits: enough against forgery, short enough for a text message


class BadLink(Exception):
    """Not a link we made (`invalid`), or one past its date (`expired`; its `language`, read
    only once the signature held, lets the page say so in the patient's words)."""

    def __init__(self, reason: str, language: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.language = reason, language


@dataclass(frozen=True, slots=True)
class LinkClaims:
    subject: str  # a Patient id (preferences), an offer's uid (offers)
    language: str
    expires: datetime

    @property
    def patient(self) -> str:
        """The Patient reference of a preference link."""
        return f"Patient/{self.subject}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: str, purpose: str) -> str:
    digest = hmac.new(secret, f"{purpose}-link|{payload}".encode("ascii"), hashlib.sha256)
    return _b64(digest.digest()[:_SIGNATURE_BYTES])


def sign(secret: bytes, patient: str, language: str, now: datetime, valid: timedelta, *,
         purpose: str = "preferences") -> str:
    """A token for `/p/{token}` (`patient` is "Patient/<id>"), or for another purpose's page
    (`patient` is then that page's subject, e.g. an offer's uid)."""
    patient_id = patient.removeprefix("Patient/")
    if not PATIENT_ID.fullmatch(patient_id) or not _LANGUAGE.fullmatch(language):
        raise ValueError("a link needs a Patient id (or offer uid) and a two-letter language")
    expires = int((now + valid).timestamp())
    payload = _b64(f"{patient_id}|{language}|{expires:x}".encode("ascii"))
    return f"{payload}.{_signature(secret, payload, purpose)}"


def verify(secret: bytes, token: str, now: datetime, *,
           purpose: str = "preferences") -> LinkClaims:
    """The claims of a genuine, unexpired token; the signature is checked before anything in
    the payload is read."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise BadLink("invalid")
    payload, signature = match.groups()
    if not hmac.compare_digest(signature, _signature(secret, payload, purpose)):
        raise BadLink("invalid")
    try:
        patient_id, language, expires_hex = _unb64(payload).decode("ascii").split("|")
        expires = datetime.fromtimestamp(int(expires_hex, 16), UTC)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise BadLink("invalid") from exc
    if not PATIENT_ID.fullmatch(patient_id) or not _LANGUAGE.fullmatch(language):
        raise BadLink("invalid")
    if expires <= now:
        raise BadLink("expired", language)
    return LinkClaims(patient_id, language, expires)


def open_with(secret: SecretStr | None, token: str, now: datetime, *,
              purpose: str = "preferences") -> LinkClaims:
    """`verify` with the configured secret; BadLink `off` when the patient pages are off (no
    OUTREACH_PREFERENCES_SECRET)."""
    if secret is None:
        raise BadLink("off")
    return verify(secret.get_secret_value().encode(), token, now, purpose=purpose)
