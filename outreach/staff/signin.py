"""Staff sign-in for the manager pages: an admin token (OUTREACH_ADMIN_TOKENS), checked in
constant time, or a SMART standalone sign-in at the EHR, exchanged once for an encrypted,
expiring session cookie naming the caller (a token's name, or the staff member's fhirUser)."""

from __future__ import annotations

import base64
import hmac
import json
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from outreach.core.settings import Settings

COOKIE = "outreach_staff"
COOKIE_PATH = "/dashboard"
SESSION = timedelta(hours=8)  # a working day


def caller_for(settings: Settings, token: str | None) -> str | None:
    """The caller's name for an admin token, or None."""
    if not token:
        return None
    given = token.encode()
    for known, name in settings.admin_callers().items():
        if known and hmac.compare_digest(given, known.encode()):
            return name
    return None


def _derive(secret: str, info: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _fernet(settings: Settings) -> Fernet | None:
    # Keyed by the tokens themselves: rotating OUTREACH_ADMIN_TOKENS signs everyone out.
    if settings.admin_tokens is None:
        return None
    return _derive(settings.admin_tokens.get_secret_value(), b"fhir-outreach staff session")


def smart_sign_in_on(settings: Settings) -> bool:
    """Staff may sign in at the EHR: the SMART app is registered and has somewhere to return."""
    return bool(settings.smart_client_id and settings.smart_session_secret
                and settings.public_url and settings.smart_issuers)


def _smart_fernet(settings: Settings) -> Fernet | None:
    # Keyed by the SMART session secret (its own purpose: never the clinician view's cookies).
    if not smart_sign_in_on(settings):
        return None
    assert settings.smart_session_secret is not None
    return _derive(settings.smart_session_secret.get_secret_value(),
                   b"fhir-outreach staff session smart")


def staff_types(settings: Settings) -> frozenset[str]:
    """The fhirUser types that may see the dashboard (OUTREACH_DASHBOARD_STAFF_TYPES)."""
    return frozenset(t.strip() for t in settings.dashboard_staff_types.split(",") if t.strip())


def _seal(fernet: Fernet, caller: str, now: datetime) -> str:
    payload = json.dumps({"caller": caller, "at": now.timestamp()}).encode()
    return fernet.encrypt_at_time(payload, int(now.timestamp())).decode()


def seal(settings: Settings, caller: str, now: datetime) -> str:
    fernet = _fernet(settings)
    assert fernet is not None, "a caller was found, so tokens are configured"
    return _seal(fernet, caller, now)


def seal_staff_member(settings: Settings, member: str, now: datetime) -> str:
    """The session of a staff member signed in at the EHR; `member` is their fhirUser
    ("Practitioner/123"), the only thing the cookie holds about them."""
    fernet = _smart_fernet(settings)
    assert fernet is not None, "the sign-in route checks that SMART sign-in is on"
    return _seal(fernet, member, now)


def _opened(fernet: Fernet | None, cookie: str, now: datetime) -> str | None:
    if fernet is None:
        return None
    try:
        data = json.loads(fernet.decrypt_at_time(cookie.encode(), int(SESSION.total_seconds()),
                                                 int(now.timestamp())))
    except (InvalidToken, ValueError):
        return None
    caller = data.get("caller") if isinstance(data, dict) else None
    return caller if isinstance(caller, str) else None


def signed_in(settings: Settings, cookie: str | None, now: datetime) -> str | None:
    """The caller a session cookie names, while it is young enough and its caller may still
    sign in: a token's name still configured, or a staff member of a type still allowed."""
    if not cookie or len(cookie) > 4096:
        return None
    caller = _opened(_fernet(settings), cookie, now)
    if caller is not None:
        return caller if caller in settings.admin_callers().values() else None
    member = _opened(_smart_fernet(settings), cookie, now)
    if member is None:
        return None
    return member if member.partition("/")[0] in staff_types(settings) else None
