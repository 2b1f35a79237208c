"""A local SMART App Launch authorization server (EHR launch and standalone), auto-approving.

Shapes follow SMART App Launch 2.x (hl7.org/fhir/smart-app-launch): `{fhir}/.well-known/
smart-configuration` names the endpoints and capabilities; `GET /authorize` takes
response_type=code, client_id, redirect_uri, scope, state, aud, launch (EHR launch) and a PKCE
S256 code_challenge, and redirects to redirect_uri with `code` and `state`; `POST /token`
(form: grant_type=authorization_code, code, redirect_uri, client_id, code_verifier) answers
`{access_token, token_type: "Bearer", expires_in, scope, patient}`. Errors follow RFC 6749:
an unknown client or redirect URI is answered here (never redirected to), anything else is
redirected back with `error`; the token endpoint answers 400 `{"error": ...}`.

The FHIR base it advertises (`fhir_base`, the launch's `iss`) serves only the discovery
document: the clinician view reads its own store, not the EHR's FHIR API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

CLIENT_ID = "outreach-test-client"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    patient: str
    scope: str
    used: bool = False


@dataclass
class AuthState:
    redirect_uri: str = ""
    launches: dict[str, str] = field(default_factory=dict)  # launch id → patient id
    standalone_patient: str | None = None  # the patient "picked" on a standalone launch
    grants: dict[str, Grant] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    deny: bool = False  # the user refuses access
    token_failure: int | None = None  # the token endpoint answers this HTTP status
    omit_patient: bool = False  # a token response without patient context
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
            return self._json(200, self.server.configuration())
        if url.path == "/authorize":
            return self._authorize({k: v[0] for k, v in parse_qs(url.query).items()})
        self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/token":
            return self._json(404, {"error": "not_found"})
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        status, body = self.server.token(form)
        self._json(status, body)

    def _authorize(self, query: dict[str, str]) -> None:
        state = self.server.state
        with state.lock:
            state.authorize_requests.append(query)
        if query.get("client_id") != CLIENT_ID or query.get("redirect_uri") != state.redirect_uri:
            return self._json(400, {"error": "invalid_request",
                                    "error_description": "unknown client_id or redirect_uri"})
        error, patient = self.server.check_authorize(query)
        target = {"state": query.get("state", "")}
        if error:
            target["error"] = error
        else:
            code = secrets.token_urlsafe(16)
            assert patient is not None
            with state.lock:
                state.grants[code] = Grant(CLIENT_ID, state.redirect_uri,
                                           query["code_challenge"], patient, query["scope"])
            target["code"] = code
        self._redirect(f"{query['redirect_uri']}?{urlencode(target)}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: AuthState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.base_url,
            "authorization_endpoint": f"{self.base_url}/authorize",
            "token_endpoint": f"{self.base_url}/token",
            "grant_types_supported": ["authorization_code"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient",
                                 "patient/*.read", "patient/*.rs"],
            "capabilities": ["launch-ehr", "launch-standalone", "client-public",
                             "context-ehr-patient", "context-standalone-patient",
                             "permission-patient", "sso-openid-connect"],
        }

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
        return "invalid_scope", None

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        state = self.state
        with state.lock:
            state.token_requests.append(form)
            grant = state.grants.get(form.get("code", ""))
            if state.token_failure is not None:
                return state.token_failure, {"error": "server_error"}
            if form.get("grant_type") != "authorization_code":
                return 400, {"error": "unsupported_grant_type"}
            if grant is None or grant.used or grant.client_id != form.get("client_id") or \
                    grant.redirect_uri != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant"}
            grant.used = True  # codes are single-use
        if s256(form.get("code_verifier", "")) != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE check failed"}
        body: dict[str, Any] = {"access_token": secrets.token_urlsafe(32),
                                "token_type": "Bearer", "expires_in": 3600, "scope": grant.scope}
        if not state.omit_patient:
            body["patient"] = grant.patient
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
