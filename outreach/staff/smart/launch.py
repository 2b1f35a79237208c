"""SMART App Launch (EHR and standalone): issuer allow-list, discovery, PKCE, token exchange."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from outreach.core.settings import Settings

# FHIR R4 id: the token's `patient` must be one, so it is safe to use as a reference.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_PARAM_LENGTH = 2048
DEFAULT_TOKEN_LIFETIME = timedelta(hours=1)
# An EHR session rarely outlives a shift; the cookie never outlives this, whatever expires_in says.
MAX_SESSION = timedelta(hours=12)


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


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    patient: str  # "Patient/{id}", the form enrollments store
    expires_at: datetime
    scope: str
    # SMART's `need_patient_banner`: false when the EHR already shows whose chart this is; an
    # EHR that does not say gets a banner (a standalone launch has none of its own).
    need_patient_banner: bool = True


def _url(value: object) -> str | None:
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
    if not iss or len(iss) > MAX_PARAM_LENGTH or _url(iss) is None:
        raise LaunchError("The launch did not say which EHR it came from (missing or malformed "
                          "'iss').", hint="Open the app again from the patient's chart.")
    wanted = iss.rstrip("/")
    for issuer in settings.smart_issuers:
        if secrets.compare_digest(issuer.encode(), wanted.encode()):
            return issuer
    raise LaunchError("This EHR is not allowed to launch the outreach view.",
                      hint="Ask IT to add its FHIR base URL to OUTREACH_SMART_ALLOWED_ISS.")


async def discover(client: httpx.AsyncClient, iss: str) -> SmartEndpoints:
    """Read the authorize and token endpoints from {iss}/.well-known/smart-configuration."""
    unavailable = LaunchError("The EHR's SMART configuration could not be read.", 502,
                              hint="Try again in a moment; if it persists, tell IT.")
    try:
        response = await client.get(f"{iss}/.well-known/smart-configuration",
                                    headers={"Accept": "application/json"})
        config = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise unavailable from exc
    if not isinstance(config, dict):
        raise unavailable
    authorize, token = _url(config.get("authorization_endpoint")), _url(
        config.get("token_endpoint"))
    methods = config.get("code_challenge_methods_supported")
    if authorize is None or token is None or (
            isinstance(methods, list) and "S256" not in methods):
        raise LaunchError("The EHR's SMART configuration lacks endpoints or PKCE (S256).", 502,
                          hint="Tell IT: the EHR must support SMART App Launch with PKCE.")
    return SmartEndpoints(authorize, token, _url(config.get("issuer")),
                          _url(config.get("jwks_uri")))


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


def scopes_for(settings: Settings, *, standalone: bool) -> str:
    """The configured scopes plus the launch scope: `launch` takes the EHR's context, while
    `launch/patient` makes the authorization server ask which patient."""
    scopes = [s for s in settings.smart_scopes.split() if not s.startswith("launch")]
    return " ".join(["launch/patient" if standalone else "launch", *scopes])


def authorize_url(settings: Settings, endpoints: SmartEndpoints, pending: PendingLaunch,
                  launch: str | None, scope: str | None = None) -> str:
    """`scope` replaces the clinician view's scopes (a staff sign-in asks only who the user
    is)."""
    assert settings.smart_client_id is not None, "checked by the route"
    params = {
        "response_type": "code", "client_id": settings.smart_client_id,
        "redirect_uri": pending.redirect_uri,
        "scope": scope or scopes_for(settings, standalone=launch is None),
        "state": pending.state, "aud": pending.iss,
        "code_challenge": challenge_of(pending.verifier), "code_challenge_method": "S256",
    }
    if launch is not None:
        params["launch"] = launch
    return str(httpx.URL(endpoints.authorize).copy_merge_params(params))


def _refused(body: object) -> LaunchError:
    error = body.get("error") if isinstance(body, dict) else None
    code = error if isinstance(error, str) and re.fullmatch(r"[a-z_]{1,40}", error) else "unknown"
    return LaunchError(f"The EHR refused the sign-in ({code}).",
                       hint="Open the app again from the patient's chart.")


async def exchange_code(client: httpx.AsyncClient, pending: PendingLaunch, code: str,
                        client_id: str, now: datetime) -> TokenGrant:
    """Trade the authorization code (with the PKCE verifier) for a token with patient context."""
    return _grant(await token_response(client, pending, code, client_id), now)


async def token_response(client: httpx.AsyncClient, pending: PendingLaunch, code: str,
                         client_id: str) -> dict[str, Any]:
    """The token endpoint's answer to the authorization code and PKCE verifier, or a
    LaunchError saying why there is none."""
    form = {"grant_type": "authorization_code", "code": code, "client_id": client_id,
            "redirect_uri": pending.redirect_uri, "code_verifier": pending.verifier}
    try:
        response = await client.post(pending.token_endpoint, data=form,
                                     headers={"Accept": "application/json"})
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise LaunchError("The EHR's token endpoint did not answer.", 502,
                          hint="Try again in a moment; if it persists, tell IT.") from exc
    if response.status_code != 200:
        raise _refused(body) if 400 <= response.status_code < 500 else LaunchError(
            f"The EHR's token endpoint failed (HTTP {response.status_code}).", 502)
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
