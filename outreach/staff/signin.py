"""Staff sign-in for the manager pages: an admin token (OUTREACH_ADMIN_TOKENS), checked in
constant time and exchanged once for an encrypted, expiring session cookie."""

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


def _fernet(settings: Settings) -> Fernet | None:
    # Keyed by the tokens themselves: rotating OUTREACH_ADMIN_TOKENS signs everyone out.
    if settings.admin_tokens is None:
        return None
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"fhir-outreach staff session").derive(
        settings.admin_tokens.get_secret_value().encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(settings: Settings, caller: str, now: datetime) -> str:
    fernet = _fernet(settings)
    assert fernet is not None, "a caller was found, so tokens are configured"
    payload = json.dumps({"caller": caller, "at": now.timestamp()}).encode()
    return fernet.encrypt_at_time(payload, int(now.timestamp())).decode()


def signed_in(settings: Settings, cookie: str | None, now: datetime) -> str | None:
    """The caller a session cookie names, while it is young enough and its caller still has a
    token."""
    fernet = _fernet(settings)
    if fernet is None or not cookie or len(cookie) > 4096:
        return None
    try:
        data = json.loads(fernet.decrypt_at_time(cookie.encode(), int(SESSION.total_seconds()),
                                                 int(now.timestamp())))
    except (InvalidToken, ValueError):
        return None
    caller = data.get("caller") if isinstance(data, dict) else None
    return caller if caller in settings.admin_callers().values() else None
