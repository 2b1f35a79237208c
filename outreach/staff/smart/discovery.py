"""Where the EHR's SMART endpoints are: `.well-known/smart-configuration` (SMART 1.0 and 2.x),
else the CapabilityStatement's `oauth-uris` extension (SMART v1 servers that publish only that).

A server that answers but publishes neither is a permanent condition (tell IT); one that does
not answer, or fails, is a transient one (try again)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from connector.errors import FhirError
from connector.resources import parse_json
from outreach.staff.smart.launch import LaunchError, SmartEndpoints, http_url

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
MAX_CONFIGURATION_BYTES = 262_144
# Real CapabilityStatements run to a few hundred kilobytes (every resource and search param).
MAX_CAPABILITY_BYTES = 4_000_000
# A v2 scope: context/Type.permissions, permissions in c-r-u-d-s order (SMART 2.x §scopes).
_V2_SCOPE = re.compile(r"(patient|user|system)/(\*|[A-Z][A-Za-z]{0,63})\.(?=[cruds])c?r?u?d?s?"
                       r"(\?.*)?")

_NONE_PUBLISHED = LaunchError(
    "The EHR publishes no SMART configuration: neither .well-known/smart-configuration nor "
    "SMART endpoints (oauth-uris) in its CapabilityStatement.", 502,
    hint="Tell IT: check the EHR's FHIR base URL in OUTREACH_SMART_ALLOWED_ISS, and that the "
         "EHR supports SMART App Launch.")


def _unavailable(what: str) -> LaunchError:
    return LaunchError(f"The EHR's {what} could not be read.", 502,
                       hint="Try again in a moment; if it persists, tell IT.")


async def _get_json(client: httpx.AsyncClient, url: str, limit: int, what: str
                    ) -> tuple[int, object]:
    """(status, document or None); a document that is not JSON, or too big, is None.
    Transport errors and 5xx are transient: a LaunchError saying to try again."""
    try:
        async with client.stream("GET", url, headers={
                "Accept": "application/json, application/fhir+json"}) as response:
            if response.status_code >= 500 or response.status_code == 429:
                raise _unavailable(what)
            if response.status_code != 200:
                return response.status_code, None
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    return 200, None
    except httpx.HTTPError as exc:
        raise _unavailable(what) from exc
    try:
        return 200, parse_json(bytes(body))
    except FhirError:
        return 200, None


def _is_v2(config: dict[str, Any]) -> bool:
    """Whether to ask in SMART v2 scope syntax: the server says `permission-v2`, or lists a
    v2 scope; v1 (`.read`) otherwise, which v2 servers also accept."""
    capabilities = config.get("capabilities")
    if isinstance(capabilities, list) and "permission-v2" in capabilities:
        return True
    scopes = config.get("scopes_supported")
    return isinstance(scopes, list) and any(
        isinstance(s, str) and _V2_SCOPE.fullmatch(s) for s in scopes)


def _strings(value: object) -> tuple[str, ...] | None:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else None


def from_configuration(config: dict[str, Any]) -> SmartEndpoints:
    authorize, token = http_url(config.get("authorization_endpoint")), http_url(
        config.get("token_endpoint"))
    methods = config.get("code_challenge_methods_supported")
    if authorize is None or token is None or (
            isinstance(methods, list) and "S256" not in methods):
        raise LaunchError("The EHR's SMART configuration lacks endpoints or PKCE (S256).", 502,
                          hint="Tell IT: the EHR must support SMART App Launch with PKCE.")
    return SmartEndpoints(authorize, token, http_url(config.get("issuer")),
                          http_url(config.get("jwks_uri")), v2=_is_v2(config),
                          auth_methods=_strings(config.get("token_endpoint_auth_methods_supported")))


def _oauth_uris(statement: object) -> dict[str, object]:
    """url → valueUri of the oauth-uris extension's parts, from the first `rest` naming them."""
    rests = statement.get("rest") if isinstance(statement, dict) else None
    for rest in rests if isinstance(rests, list) else []:
        security = rest.get("security") if isinstance(rest, dict) else None
        extensions = security.get("extension") if isinstance(security, dict) else None
        for ext in extensions if isinstance(extensions, list) else []:
            if isinstance(ext, dict) and ext.get("url") == OAUTH_URIS and \
                    isinstance(ext.get("extension"), list):
                return {str(part.get("url")): part.get("valueUri")
                        for part in ext["extension"] if isinstance(part, dict)}
    return {}


async def _from_capability_statement(client: httpx.AsyncClient, iss: str) -> SmartEndpoints:
    _, statement = await _get_json(client, f"{iss}/metadata", MAX_CAPABILITY_BYTES,
                                   "CapabilityStatement")
    uris = _oauth_uris(statement)
    authorize, token = http_url(uris.get("authorize")), http_url(uris.get("token"))
    if authorize is None or token is None:
        raise _NONE_PUBLISHED
    return SmartEndpoints(authorize, token)


async def discover(client: httpx.AsyncClient, iss: str) -> SmartEndpoints:
    """The EHR's SMART endpoints and what it supports, from its well-known configuration or,
    failing that, its CapabilityStatement (SMART v1)."""
    _, config = await _get_json(client, f"{iss}/.well-known/smart-configuration",
                                MAX_CONFIGURATION_BYTES, "SMART configuration")
    if isinstance(config, dict):
        return from_configuration(config)
    return await _from_capability_statement(client, iss)
