"""A local SMART App Launch authorization server (EHR launch and standalone), auto-approving.

Shapes follow SMART App Launch 2.x (hl7.org/fhir/smart-app-launch): `{fhir}/.well-known/
smart-configuration` names the endpoints and capabilities; `GET /authorize` takes
response_type=code, client_id, redirect_uri, scope, state, aud, launch (EHR launch) and a PKCE
S256 code_challenge, and redirects to redirect_uri with `code` and `state`; `POST /token`
(form: grant_type=authorization_code, code, redirect_uri, client_id, code_verifier) answers
`{access_token, token_type: "Bearer", expires_in, scope, patient}`, plus an OpenID Connect
`id_token` (RS256, its key at `jwks_uri`, `fhirUser` absolute under the FHIR base) when the
scopes ask for `openid fhirUser` and a user is signed in (`AuthState.user`): a staff sign-in asks
for only these, with no launch. Errors follow RFC 6749:
an unknown client or redirect URI is answered here (never redirected to), anything else is
redirected back with `error` (and `error_description`); the token endpoint answers 400
`{"error": ..., "error_description": ...}`.

A confidential client (`AuthState.client_auth`): the token endpoint then requires HTTP Basic
with `client_secret` (`client_secret_basic`), or a `client_assertion` JWT signed by the key in
`client_jwks`, for this token URL, unexpired, its `jti` used once (`private_key_jwt`); anything
else is 401 `invalid_client` with a description. `v1_only` serves no `.well-known/
smart-configuration` (404), only a CapabilityStatement at `{fhir}/metadata` with the SMART v1
`oauth-uris` extension.

The FHIR base it advertises (`fhir_base`, the launch's `iss`) serves the discovery document
and, when `AuthState.fhir_upstream` names the real FHIR test server, its FHIR API for GETs
carrying a Bearer access token this server issued (else 401): what the clinician view reads as
the signed-in user. `AuthState.need_patient_banner` is sent in the token response when set.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlparse

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "outreach-test-client"
CLIENT_SECRET = "test-client-secret-" + "c" * 16
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    patient: str | None
    scope: str
    used: bool = False


KEY_ID = "test-signing-key"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class AuthState:
    redirect_uri: str = ""
    also_redirect_to: set[str] = field(default_factory=set)  # more registered redirect URIs
    user: str | None = None  # who signs in ("Practitioner/doc-1"): the id_token's fhirUser
    id_token_claims: dict[str, Any] = field(default_factory=dict)  # overrides, for bad tokens
    stranger_key: bool = False  # sign the id_token with a key not in the JWKS
    id_token_raw: str | None = None  # send this instead of a signed id_token (hostile input)
    sign_in_page: bool = False  # show a page the user approves on (else approve at once)
    launches: dict[str, str] = field(default_factory=dict)  # launch id → patient id
    standalone_patient: str | None = None  # the patient "picked" on a standalone launch
    grants: dict[str, Grant] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    deny: bool = False  # the user refuses access
    token_failure: int | None = None  # the token endpoint answers this HTTP status
    omit_patient: bool = False  # a token response without patient context
    deny_description: str | None = None  # the error_description sent with access_denied
    client_auth: str = "none"  # "none" | "client_secret_basic" | "private_key_jwt"
    client_secret: str = CLIENT_SECRET
    client_jwks: dict[str, Any] = field(default_factory=dict)  # the registered public keys
    used_jtis: set[str] = field(default_factory=set)
    v1_only: bool = False  # discovery only from the CapabilityStatement (SMART v1)
    discovery_failure: int | None = None  # .well-known answers this HTTP status
    token_headers: list[dict[str, str]] = field(default_factory=list)
    need_patient_banner: bool | None = None  # sent in the token response when not None
    fhir_upstream: str | None = None  # the FHIR server behind `fhir_base` (GETs only)
    fhir_failure: int | None = None  # the FHIR API answers this HTTP status
    issued: set[str] = field(default_factory=set)  # access tokens given out
    fhir_requests: list[dict[str, Any]] = field(default_factory=list)  # path, query, authorized
    lock: threading.Lock = field(default_factory=threading.Lock)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(
        b"=").decode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *_args: object) -> None:  # keep test output clean
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/fhir/.well-known/smart-configuration":
            if self.server.state.discovery_failure is not None:
                return self._json(self.server.state.discovery_failure, {"error": "down"})
            if self.server.state.v1_only:
                return self._json(404, {"error": "not_found"})
            return self._json(200, self.server.configuration())
        if url.path == "/fhir/metadata":
            return self._json(200, self.server.capability_statement())
        if url.path == "/jwks":
            return self._json(200, self.server.jwks())
        if url.path == "/authorize":
            return self._authorize({k: v[0] for k, v in parse_qs(url.query).items()})
        if url.path.startswith("/fhir/") and self.server.state.fhir_upstream:
            return self._fhir(url.path.removeprefix("/fhir"), url.query)
        self._json(404, {"error": "not_found"})

    def _fhir(self, path: str, query: str) -> None:
        """The EHR's FHIR API as the signed-in user sees it: a token we issued, or nothing."""
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        authorized = auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in state.issued
        with state.lock:
            state.fhir_requests.append({"path": path, "query": query, "authorized": authorized})
        if not authorized:
            return self._json(401, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "login", "diagnostics": "no valid token"}]})
        if state.fhir_failure is not None:
            return self._json(state.fhir_failure, {"resourceType": "OperationOutcome"})
        assert state.fhir_upstream is not None
        answer = httpx.get(f"{state.fhir_upstream}{path}" + (f"?{query}" if query else ""),
                           headers={"Accept": "application/fhir+json"}, timeout=10)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if path == "/authorize":  # the user approved on the sign-in page
            return self._authorize(form, approved=True)
        if path != "/token":
            return self._json(404, {"error": "not_found"})
        status, body = self.server.token(form, {k.lower(): v for k, v in self.headers.items()})
        self._json(status, body)

    def _sign_in_page(self, query: dict[str, str]) -> None:
        """What a real EHR shows: the user approves here, so the way back to the app starts on
        this site (the browser's cross-site rules then apply to it)."""
        fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in query.items())
        page = (f'<!doctype html><title>EHR sign-in</title><form method="post" '
                f'action="/authorize">{fields}<button>Approve</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def _authorize(self, query: dict[str, str], approved: bool = False) -> None:
        state = self.server.state
        if state.sign_in_page and not approved:
            return self._sign_in_page(query)
        with state.lock:
            state.authorize_requests.append(query)
        if query.get("client_id") != CLIENT_ID or \
                query.get("redirect_uri") not in {state.redirect_uri, *state.also_redirect_to}:
            return self._json(400, {"error": "invalid_request",
                                    "error_description": "unknown client_id or redirect_uri"})
        error, patient = self.server.check_authorize(query)
        target = {"state": query.get("state", "")}
        if error:
            target["error"] = error
            if error == "access_denied" and state.deny_description:
                target["error_description"] = state.deny_description
        else:
            code = secrets.token_urlsafe(16)
            with state.lock:
                state.grants[code] = Grant(CLIENT_ID, query["redirect_uri"],
                                           query["code_challenge"], patient, query["scope"])
            target["code"] = code
        self._redirect(f"{query['redirect_uri']}?{urlencode(target)}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: AuthState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.key = _new_key()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.base_url,
            "authorization_endpoint": f"{self.base_url}/authorize",
            "token_endpoint": f"{self.base_url}/token",
            "jwks_uri": f"{self.base_url}/jwks",
            "grant_types_supported": ["authorization_code"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient",
                                 "patient/*.read", "patient/*.rs"],
            "token_endpoint_auth_methods_supported": self._auth_methods(),
            "capabilities": ["launch-ehr", "launch-standalone", self._client_capability(),
                             "context-ehr-patient", "context-standalone-patient",
                             "permission-patient", "permission-v1", "permission-v2",
                             "sso-openid-connect"],
        }

    def _auth_methods(self) -> list[str]:
        return [self.state.client_auth] if self.state.client_auth != "none" else ["none"]

    def _client_capability(self) -> str:
        return {"client_secret_basic": "client-confidential-symmetric",
                "private_key_jwt": "client-confidential-asymmetric"}.get(
                    self.state.client_auth, "client-public")

    def capability_statement(self) -> dict[str, Any]:
        """A SMART v1 server's CapabilityStatement: the endpoints in `oauth-uris` only."""
        return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server",
                "security": {"service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"}]}],
                    "extension": [{"url": OAUTH_URIS, "extension": [
                        {"url": "authorize", "valueUri": f"{self.base_url}/authorize"},
                        {"url": "token", "valueUri": f"{self.base_url}/token"}]}]}}]}

    def authenticate(self, form: dict[str, str], headers: Mapping[str, str]
                     ) -> tuple[str | None, str]:
        """(client id, "") of a client that proved itself as registered, or (None, why)."""
        kind = self.state.client_auth
        if kind == "none":
            return form.get("client_id"), ""
        if kind == "client_secret_basic":
            scheme, _, encoded = headers.get("authorization", "").partition(" ")
            try:
                pair = base64.b64decode(encoded, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return None, "client authentication failed: no HTTP Basic credentials"
            client, _, secret = pair.partition(":")
            if scheme != "Basic" or unquote_plus(client) != CLIENT_ID or \
                    unquote_plus(secret) != self.state.client_secret:
                return None, "client authentication failed: wrong client id or secret"
            return CLIENT_ID, ""
        return self._assertion(form)

    def _assertion(self, form: dict[str, str]) -> tuple[str | None, str]:
        if form.get("client_assertion_type") != ASSERTION_TYPE or \
                "client_assertion" not in form:
            return None, "client authentication failed: a client_assertion is required"
        try:
            keys = jwt.PyJWKSet.from_dict(self.state.client_jwks)
            kid = jwt.get_unverified_header(form["client_assertion"]).get("kid")
            key = next(k for k in keys.keys if k.key_id == kid)
            claims = jwt.decode(form["client_assertion"], key, algorithms=["RS384", "ES384"],
                                audience=f"{self.base_url}/token", issuer=CLIENT_ID,
                                options={"require": ["exp", "jti", "sub", "iss", "aud"]})
        except (jwt.PyJWTError, StopIteration) as exc:
            return None, f"client authentication failed: {type(exc).__name__}"
        if claims["sub"] != CLIENT_ID or claims["exp"] > time.time() + 300 or \
                claims["jti"] in self.state.used_jtis:
            return None, "client authentication failed: assertion claims"
        self.state.used_jtis.add(claims["jti"])
        return CLIENT_ID, ""

    def check_authorize(self, query: dict[str, str]) -> tuple[str | None, str | None]:
        """(error, patient): what the user would be shown and approve."""
        scopes = query.get("scope", "").split()
        state = self.state
        if query.get("response_type") != "code" or not query.get("state"):
            return "invalid_request", None
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return "invalid_request", None
        if query.get("aud", "").rstrip("/") != f"{self.base_url}/fhir":
            return "invalid_request", None  # SMART: aud must be this server's FHIR base
        if state.deny:
            return "access_denied", None
        if "launch" in scopes:
            patient = state.launches.get(query.get("launch", ""))
            return ("invalid_request", None) if patient is None else (None, patient)
        if "launch/patient" in scopes and state.standalone_patient:
            return None, state.standalone_patient
        if {"openid", "fhirUser"} <= set(scopes) and state.user:
            return None, None  # a sign-in: who the user is, no patient
        return "invalid_scope", None

    def jwks(self) -> dict[str, Any]:
        key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**key, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]}

    def id_token(self, grant: Grant) -> str | None:
        state = self.state
        if not {"openid", "fhirUser"} <= set(grant.scope.split()) or not state.user:
            return None
        if state.id_token_raw is not None:
            return state.id_token_raw
        now = int(time.time())
        claims = {"iss": self.base_url, "sub": state.user.replace("/", "-"), "aud": CLIENT_ID,
                  "iat": now, "exp": now + 300, "fhirUser": f"{self.base_url}/fhir/{state.user}",
                  **state.id_token_claims}
        key = _new_key() if state.stranger_key else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KEY_ID})

    def token(self, form: dict[str, str], headers: Mapping[str, str] | None = None
              ) -> tuple[int, dict[str, Any]]:
        state = self.state
        with state.lock:
            state.token_requests.append(form)
            state.token_headers.append(dict(headers or {}))
            grant = state.grants.get(form.get("code", ""))
            if state.token_failure is not None:
                return state.token_failure, {"error": "server_error"}
            if form.get("grant_type") != "authorization_code":
                return 400, {"error": "unsupported_grant_type"}
            client, why = self.authenticate(form, headers or {})
            if client is None:
                return 401, {"error": "invalid_client", "error_description": why}
            if grant is None or grant.used or grant.client_id != client or \
                    grant.redirect_uri != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant"}
            grant.used = True  # codes are single-use
        if s256(form.get("code_verifier", "")) != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE check failed"}
        body: dict[str, Any] = {"access_token": secrets.token_urlsafe(32),
                                "token_type": "Bearer", "expires_in": 3600, "scope": grant.scope}
        if not state.omit_patient and grant.patient is not None:
            body["patient"] = grant.patient
        if state.need_patient_banner is not None:
            body["need_patient_banner"] = state.need_patient_banner
        with state.lock:
            state.issued.add(body["access_token"])
        id_token = self.id_token(grant)
        if id_token is not None:
            body["id_token"] = id_token
        return 200, body


class SmartAuthServer:
    """Start with `with SmartAuthServer(redirect_uri) as auth:`; `auth.fhir_base` is the iss."""

    def __init__(self, redirect_uri: str = "") -> None:
        self.state = AuthState(redirect_uri=redirect_uri)
        self._server = _Server(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    def __enter__(self) -> SmartAuthServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def register_launch(self, launch: str, patient_id: str) -> None:
        """The EHR opened the app with `launch` from this patient's chart."""
        with self.state.lock:
            self.state.launches[launch] = patient_id


def follow_to_callback(client: httpx.Client, authorize_location: str) -> str:
    """Let the (auto-approving) authorization server answer; return its redirect back to us."""
    answer = client.get(authorize_location)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def ehr_sign_in(client: httpx.Client, auth: SmartAuthServer, launch: str = "xyz"
                ) -> httpx.Response:
    """The whole EHR launch, as a browser would do it; returns our callback's response."""
    started = client.get("/smart/launch", params={"iss": auth.fhir_base, "launch": launch})
    assert started.status_code == 302, started.text
    return client.get(follow_to_callback(client, started.headers["location"]))
