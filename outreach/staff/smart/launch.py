"""SMART App Launch (EHR and standalone): issuer allow-list, PKCE, scopes, token exchange."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from outreach.core.settings import Settings

# FHIR R4 id: the token's `patient` must be one, so it is safe to use as a reference.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_PARAM_LENGTH = 2048
DEFAULT_TOKEN_LIFETIME = timedelta(hours=1)
# An EHR session rarely outlives a shift; the cookie never outlives this, whatever expires_in says.
MAX_SESSION = timedelta(hours=12)
# The least the view asks of the chart, in SMART v2 syntax and in v1 for servers without it.
# openid fhirUser: who is acting, for what staff do on the page (not chart data).
MINIMUM_SCOPES_V2 = "openid fhirUser patient/Patient.r patient/Appointment.rs"
MINIMUM_SCOPES_V1 = "openid fhirUser patient/Patient.read patient/Appointment.read"
MAX_DESCRIPTION = 200


class LaunchError(Exception):
    """A launch that cannot go on; shown as an error page with this status, never redirected."""

    def __init__(self, message: str, status: int = 400, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.hint = message, status, hint


@dataclass(frozen=True)
class SmartEndpoints:
    authorize: str
    token: str
    # OpenID Connect (the `sso-openid-connect` capability): who signs the id_token, and where
    # its keys are. Only a staff sign-in needs them.
    issuer: str | None = None
    jwks_uri: str | None = None
    v2: bool = False  # ask in SMART v2 scope syntax (the server advertises it)
    auth_methods: tuple[str, ...] | None = None  # token_endpoint_auth_methods_supported



@dataclass(frozen=True)
class PendingLaunch:
    """What /callback needs from /launch; kept in the browser's encrypted launch cookie, which
    is what binds `state` to this browser."""

    state: str
    verifier: str
    iss: str
    token_endpoint: str
    redirect_uri: str
    issuer: str = ""  # the id_token's issuer and keys ("" when the EHR named none)
    jwks_uri: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingLaunch | None:
        optional = {"issuer", "jwks_uri"}
        try:
            return cls(**{k: str(data[k] if k not in optional else data.get(k, ""))
                          for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None


class ClientAuth(Protocol):
    """How the app proves itself at the token endpoint (outreach.staff.smart.client_auth)."""

    def credentials(self, token_endpoint: str, now: float | None = None
                    ) -> tuple[dict[str, str], dict[str, str]]: ...


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    patient: str  # "Patient/{id}", the form enrollments store
    expires_at: datetime
    scope: str
    # SMART's `need_patient_banner`: false when the EHR already shows whose chart this is; an
    # EHR that does not say gets a banner (a standalone launch has none of its own).
    need_patient_banner: bool = True


def http_url(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        return None
    return value if parsed.scheme in ("http", "https") and parsed.host else None


def allowed_issuer(settings: Settings, iss: str | None) -> str:
    """The allow-listed EHR base `iss` names; anything else stops here, before any request to
    it, so a crafted launch link cannot send the browser (or us) to an unknown host."""
    if not iss or len(iss) > MAX_PARAM_LENGTH or http_url(iss) is None:
        raise LaunchError("The launch did not say which EHR it came from (missing or malformed "
                          "'iss').", hint="Open the app again from the patient's chart.")
    wanted = iss.rstrip("/")
    for issuer in settings.smart_issuers:
        if secrets.compare_digest(issuer.encode(), wanted.encode()):
            return issuer
    raise LaunchError("This EHR is not allowed to launch the outreach view.",
                      hint="Ask IT to add its FHIR base URL to OUTREACH_SMART_ALLOWED_ISS.")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def challenge_of(verifier: str) -> str:
    """PKCE S256 (RFC 7636 §4.2)."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


def new_pending_launch(settings: Settings, iss: str, endpoints: SmartEndpoints,
                       callback: str = "/smart/callback") -> PendingLaunch:
    redirect_uri = settings.public(callback)
    assert redirect_uri is not None, "checked by the route"
    return PendingLaunch(state=secrets.token_urlsafe(24), verifier=_b64(secrets.token_bytes(48)),
                         iss=iss, token_endpoint=endpoints.token, redirect_uri=redirect_uri,
                         issuer=endpoints.issuer or "", jwks_uri=endpoints.jwks_uri or "")


def scopes_for(settings: Settings, *, standalone: bool, v2: bool = True) -> str:
    """The configured scopes (else the least the view needs, in the server's syntax) plus the
    launch scope: `launch` takes the EHR's context, `launch/patient` makes the authorization
    server ask which patient."""
    chosen = settings.smart_scopes or (MINIMUM_SCOPES_V2 if v2 else MINIMUM_SCOPES_V1)
    scopes = [s for s in chosen.split() if not s.startswith("launch")]
    return " ".join(["launch/patient" if standalone else "launch", *scopes])


def authorize_url(settings: Settings, endpoints: SmartEndpoints, pending: PendingLaunch,
                  launch: str | None, scope: str | None = None) -> str:
    """`scope` replaces the clinician view's scopes (a staff sign-in asks only who the user
    is)."""
    assert settings.smart_client_id is not None, "checked by the route"
    params = {
        "response_type": "code", "client_id": settings.smart_client_id,
        "redirect_uri": pending.redirect_uri,
        "scope": scope or scopes_for(settings, standalone=launch is None, v2=endpoints.v2),
        "state": pending.state, "aud": pending.iss,
        "code_challenge": challenge_of(pending.verifier), "code_challenge_method": "S256",
    }
    if launch is not None:
        params["launch"] = launch
    return str(httpx.URL(endpoints.authorize).copy_merge_params(params))


def said(value: object, limit: int = MAX_DESCRIPTION) -> str | None:
    """An EHR's error or error_description, fit to show and log: printable text, bounded."""
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value[:limit] if c.isprintable()).strip()
    return text or None


def refusal(error: object, description: object) -> str:
    """"(error: description)", as the EHR said it, for the message shown and logged."""
    code = said(error, 40)
    detail = said(description)
    return f"{code or 'unknown'}: {detail}" if detail else (code or "unknown")


def _refused(body: object) -> LaunchError:
    said_ = body if isinstance(body, dict) else {}
    why = refusal(said_.get("error"), said_.get("error_description"))
    return LaunchError(f"The EHR refused the sign-in ({why}).",
                       hint="Open the app again from the patient's chart; if it keeps failing, "
                            "tell IT what the EHR said.")


async def exchange_code(client: httpx.AsyncClient, pending: PendingLaunch, code: str,
                        auth: ClientAuth, now: datetime) -> TokenGrant:
    """Trade the authorization code (with the PKCE verifier) for a token with patient context."""
    return _grant(await token_response(client, pending, code, auth), now)


async def token_response(client: httpx.AsyncClient, pending: PendingLaunch, code: str,
                         auth: ClientAuth) -> dict[str, Any]:
    """The token endpoint's answer to the authorization code and PKCE verifier, or a
    LaunchError saying why there is none (with the EHR's own words when it refused)."""
    fields, headers = auth.credentials(pending.token_endpoint)
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": pending.redirect_uri, "code_verifier": pending.verifier, **fields}
    try:
        response = await client.post(pending.token_endpoint, data=form,
                                     headers={"Accept": "application/json", **headers})
    except httpx.HTTPError as exc:
        raise LaunchError("The EHR's token endpoint did not answer.", 502,
                          hint="Try again in a moment; if it persists, tell IT.") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        raise _refused(body) if 400 <= response.status_code < 500 else LaunchError(
            f"The EHR's token endpoint failed (HTTP {response.status_code}).", 502,
            hint="Try again in a moment; if it persists, tell IT.")
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise LaunchError("The EHR's token response had no access token.", 502)
    return body


def _grant(body: dict[str, Any], now: datetime) -> TokenGrant:
    patient = body.get("patient")
    if not isinstance(patient, str) or not FHIR_ID.fullmatch(patient):
        raise LaunchError("The EHR did not say which patient is open.",
                          hint="Open the app from a patient's chart, or pick a patient.")
    lifetime = body.get("expires_in")
    ttl = timedelta(seconds=lifetime) if isinstance(lifetime, int) and lifetime > 0 \
        else DEFAULT_TOKEN_LIFETIME
    return TokenGrant(access_token=body["access_token"], patient=f"Patient/{patient}",
                      expires_at=now + min(ttl, MAX_SESSION), scope=str(body.get("scope", "")),
                      need_patient_banner=body.get("need_patient_banner") is not False)
