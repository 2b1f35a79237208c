"""Who signed in by SMART: the id_token checked against the EHR's published keys (signature,
issuer, audience, expiry) and its `fhirUser` claim reduced to a `Type/id` reference."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import jwt

from connector.errors import FhirError
from connector.resources import parse_json
from outreach.staff.smart.launch import FHIR_ID, LaunchError, PendingLaunch

MAX_ID_TOKEN = 16_384
MAX_JWKS_BYTES = 65_536
JWKS_DEPTH = 6  # {"keys": [{"x5c": [...]}]}
MAX_REFERENCE = 2048
# The signing algorithms OpenID Connect servers use; never "none", never HMAC (the client is
# public: it has no shared secret to check one with).
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384"]
LEEWAY_SECONDS = 60  # clock skew between the EHR and us
_RELATIVE = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})")

_UNCHECKABLE = LaunchError("The EHR's sign-in cannot be checked: its SMART configuration names "
                           "no OpenID issuer or keys (jwks_uri).", 502,
                           hint="Tell IT: staff sign-in needs the EHR's sso-openid-connect "
                                "capability.")


def _unverified(message: str) -> LaunchError:
    return LaunchError(f"The EHR's sign-in could not be verified ({message}).", 502,
                       hint="Try again; if it persists, tell IT.")


async def _keys(client: httpx.AsyncClient, jwks_uri: str) -> jwt.PyJWKSet:
    try:
        response = await client.get(jwks_uri, headers={"Accept": "application/json"})
        if response.status_code != 200 or len(response.content) > MAX_JWKS_BYTES:
            raise _unverified("its keys could not be read")
        keys = parse_json(response.content, max_depth=JWKS_DEPTH)
        if not isinstance(keys, dict):
            raise _unverified("its keys could not be read")
        return jwt.PyJWKSet.from_dict(keys)
    except (httpx.HTTPError, ValueError, FhirError, jwt.PyJWTError) as exc:
        raise _unverified("its keys could not be read") from exc


def _signing_key(keys: jwt.PyJWKSet, token: str) -> jwt.PyJWK:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except (jwt.PyJWTError, RecursionError) as exc:  # a header nested to exhaust the parser
        raise _unverified("the id_token is not a JWT") from exc
    usable = [k for k in keys.keys if k.public_key_use in (None, "sig")]
    chosen = [k for k in usable if k.key_id == kid] if kid is not None else usable
    if len(chosen) != 1:
        raise _unverified("no single key of the EHR's signed the id_token")
    return chosen[0]


def _claims(token: str, key: jwt.PyJWK, pending: PendingLaunch, client_id: str,
            now: datetime) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[a for a in ALGORITHMS if a == key.algorithm_name],
            audience=client_id, issuer=pending.issuer, leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat", "sub"], "verify_exp": False})
    except (jwt.PyJWTError, RecursionError) as exc:
        raise _unverified(type(exc).__name__) from exc
    # Expiry against our clock (the test's simulated one too), not the wall clock.
    if not isinstance(claims.get("exp"), int | float) or \
            claims["exp"] + LEEWAY_SECONDS < now.timestamp():
        raise LaunchError("This sign-in has expired.", hint="Sign in again.")
    return claims


def fhir_user(claim: object, iss: str) -> tuple[str, str]:
    """(type, id) of a `fhirUser` claim: a reference relative to the FHIR base `iss`, or absolute
    under it. Anything else (another server's resource, a search URL) is refused."""
    if not isinstance(claim, str) or len(claim) > MAX_REFERENCE:
        raise LaunchError("The EHR did not say who signed in (no fhirUser).", 403,
                          hint="Tell IT: the sign-in must ask for the fhirUser scope.")
    relative = claim.removeprefix(f"{iss.rstrip('/')}/")
    found = _RELATIVE.fullmatch(relative)
    if found is None or not FHIR_ID.fullmatch(found[2]):
        raise LaunchError("The EHR named the signed-in user in a form we cannot use.", 403,
                          hint="Tell IT: fhirUser must be a resource on this EHR's FHIR base.")
    return found[1], found[2]


async def staff_member(client: httpx.AsyncClient, pending: PendingLaunch, body: dict[str, Any],
                       client_id: str, allowed: frozenset[str], now: datetime) -> str:
    """The signed-in user as "Type/id", from the token response's id_token, once it is proven
    to come from the EHR, for this app, now, and names a member of staff of an allowed type."""
    token = body.get("id_token")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_ID_TOKEN:
        raise LaunchError("The EHR did not say who signed in (no id_token).", 502,
                          hint="Tell IT: the sign-in must ask for the openid scope.")
    if not pending.issuer or not pending.jwks_uri:
        raise _UNCHECKABLE
    claims = _claims(token, _signing_key(await _keys(client, pending.jwks_uri), token), pending,
                     client_id, now)
    kind, ident = fhir_user(claims.get("fhirUser"), pending.iss)
    if kind not in allowed:
        raise LaunchError(f"A {kind} may not open the managers' dashboard.", 403,
                          hint="Sign in as a member of staff, or ask IT which accounts may.")
    return f"{kind}/{ident}"
