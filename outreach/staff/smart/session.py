"""The browser's SMART session: encrypted, timestamped cookies (Fernet), no server-side state.

Encrypted rather than only signed: the cookie carries the EHR's access token and the patient id,
which a signed cookie would leave readable to anything that sees the request (a proxy's log).
Each purpose derives its own key, so a launch cookie can never be replayed as a session, nor a
`state` or a page token as either.

Where the browser sends no cookie (an EHR's cross-site frame with third-party cookies blocked),
the same seals travel without one: the launch in the `state` parameter (it carries the PKCE
verifier, so it is encrypted too), and the session in a short-lived page token that the
timeline's links and forms carry.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from outreach.staff.smart.launch import MAX_SESSION, PendingLaunch

LAUNCH_COOKIE = "outreach_smart_launch"
SESSION_COOKIE = "outreach_smart"
COOKIE_PATH = "/smart"
LAUNCH_TTL_SECONDS = 600  # from /launch to /callback: a login page, not a coffee break
# A page token outlives a page view by this much (each page mints a fresh one): long enough to
# read the page and act on it, short enough that a copied URL soon opens nothing.
PAGE_TOKEN_TTL_SECONDS = 1800


@dataclass(frozen=True)
class SmartSession:
    patient: str  # "Patient/{id}"
    iss: str
    access_token: str
    expires_at: datetime
    need_patient_banner: bool = True
    fhir_user: str | None = None  # "Practitioner/{id}", from the verified id_token, if any


def _fernet(secret: str, purpose: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=f"fhir-outreach smart {purpose}".encode()).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


class CookieBox:
    """Seals and opens the launch and session cookies with keys derived from the secret."""

    def __init__(self, secret: str) -> None:
        self._launch = _fernet(secret, "launch")
        self._session = _fernet(secret, "session")
        self._state = _fernet(secret, "state")
        self._page = _fernet(secret, "page")

    @staticmethod
    def _open(fernet: Fernet, token: str | None, ttl: int) -> dict[str, Any] | None:
        if not token:
            return None
        try:
            data = json.loads(fernet.decrypt(token.encode(), ttl=ttl))
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def seal_launch(self, pending: PendingLaunch) -> str:
        return self._launch.encrypt(json.dumps(pending.to_dict()).encode()).decode()

    def open_launch(self, token: str | None) -> PendingLaunch | None:
        data = self._open(self._launch, token, LAUNCH_TTL_SECONDS)
        return PendingLaunch.from_dict(data) if data is not None else None

    def seal_state(self, verifier: str, iss: str) -> str:
        """The `state` of a launch: what /callback needs when no launch cookie comes back."""
        return self._state.encrypt(json.dumps({"v": verifier, "i": iss}).encode()).decode()

    def open_state(self, state: str | None) -> tuple[str, str] | None:
        """(PKCE verifier, iss) of a `state` this server sealed in the last ten minutes."""
        data = self._open(self._state, state, LAUNCH_TTL_SECONDS)
        if data is None or not isinstance(data.get("v"), str) or not isinstance(
                data.get("i"), str):
            return None
        return data["v"], data["i"]

    def seal_session(self, session: SmartSession) -> str:
        return self._seal_session(self._session, session)

    def seal_page(self, session: SmartSession) -> str:
        """A page token: the session for a page's links and forms, for half an hour."""
        return self._seal_session(self._page, session)

    @staticmethod
    def _seal_session(fernet: Fernet, session: SmartSession) -> str:
        data = {"patient": session.patient, "iss": session.iss,
                "access_token": session.access_token,
                "expires_at": session.expires_at.timestamp(),
                "need_patient_banner": session.need_patient_banner,
                "fhir_user": session.fhir_user}
        return fernet.encrypt(json.dumps(data).encode()).decode()

    def open_session(self, token: str | None, now: datetime) -> SmartSession | None:
        # The Fernet TTL only bounds the cookie's age; the token's own expiry decides.
        return self._open_session(self._session, token, int(MAX_SESSION.total_seconds()), now)

    def open_page(self, token: str | None, now: datetime) -> SmartSession | None:
        return self._open_session(self._page, token, PAGE_TOKEN_TTL_SECONDS, now)

    def _open_session(self, fernet: Fernet, token: str | None, ttl: int, now: datetime
                      ) -> SmartSession | None:
        data = self._open(fernet, token, ttl)
        if data is None:
            return None
        try:
            user = data.get("fhir_user")
            session = SmartSession(str(data["patient"]), str(data["iss"]),
                                   str(data["access_token"]),
                                   datetime.fromtimestamp(float(data["expires_at"]), UTC),
                                   data.get("need_patient_banner") is not False,
                                   user if isinstance(user, str) else None)
        except (KeyError, TypeError, ValueError):
            return None
        return session if session.expires_at > now else None
