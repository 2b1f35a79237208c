"""Schemathesis over every route of the app (rest-hook and topic notifications, Twilio's webhooks,
the admin API, the dashboard, the preference page, the SMART view, /healthz, /metrics), on
Postgres, Redis, the FHIR test server and the local SMART and Twilio servers: once as a stranger
(whatever headers and cookies the fuzzer makes up) and once with valid credentials (admin token,
rest-hook secret, Twilio signature over the very form sent, a signed preference link, SMART
cookies), so the parsing behind each check is fuzzed too. No answer is a 5xx; a stranger gets a
4xx from every protected route."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import func, select

from channels.signatures import twilio_signature
from outreach.api.app import create_app
from outreach.api.routes.dashboard_smart import CALLBACK
from outreach.api.routes.dashboard_smart import LAUNCH_COOKIE as STAFF_LAUNCH_COOKIE
from outreach.core.ports import Runtime
from outreach.staff.signin import COOKIE as STAFF_COOKIE
from outreach.staff.smart import CookieBox
from outreach.staff.smart.launch import SmartEndpoints, new_pending_launch
from outreach.staff.smart.session import LAUNCH_COOKIE, SESSION_COOKIE, SmartSession
from outreach.staff.smart.staff_actions import csrf_token
from outreach.store.models import SubscriptionStatus
from tests.conftest import WEBHOOK_SECRET, RuntimeFactory
from tests.support.fhir_server import FhirTestServer
from tests.support.openapi_fuzz import fuzz_schema, unfuzzed_routes
from tests.support.smart_auth_server import CLIENT_ID, SmartAuthServer
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

PUBLIC = "http://testserver"  # the host the in-process client sends
ADMIN = "fuzz-admin-token-0123456789"
PREFERENCES_SECRET = "fuzz-preferences-secret-" + "p" * 20
SMART_SECRET = "fuzz-smart-session-secret-" + "s" * 20
PATIENT = "Patient/fuzz-1"
# A stranger's request to these is refused (never acted on, never a 2xx or 3xx).
PROTECTED = ("/admin", "/fhir/notify", "/channels/twilio")
# Enough to find what the earlier runs found, within about a minute for the whole module.
EXAMPLES = 25

APP = create_app()
RAW_SCHEMA = fuzz_schema(APP, ACCOUNT_SID)
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)
schema.app = APP
fuzzed = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


# Module-scoped: each local server takes half a second to stop, and there are sixty tests here.
@pytest.fixture(scope="module")
def auth() -> Iterator[SmartAuthServer]:
    with SmartAuthServer(f"{PUBLIC}/smart/callback") as server:
        yield server


@pytest.fixture(scope="module")
def twilio_api() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


@pytest.fixture
def rt(make_runtime: RuntimeFactory, redis_url: str, fhir: FhirTestServer,
       twilio_api: TwilioServer, auth: SmartAuthServer) -> Runtime:
    return make_runtime(
        public_url=PUBLIC, broker_url=redis_url, fhir_base_url=fhir.base_url,
        webhook_secret=WEBHOOK_SECRET, admin_tokens=f"fuzz={ADMIN}",
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from="+15555550100",
        twilio_base_url=twilio_api.base_url, preferences_secret=PREFERENCES_SECRET,
        smart_client_id=CLIENT_ID, smart_allowed_iss=auth.fhir_base,
        smart_session_secret=SMART_SECRET)


def test_every_route_of_the_app_is_fuzzed() -> None:
    assert unfuzzed_routes(APP, RAW_SCHEMA) == []


@schema.parametrize()
@fuzzed
def test_a_stranger_never_gets_a_server_error(case: schemathesis.Case, rt: Runtime) -> None:
    response = case.call_and_validate(checks=[not_a_server_error], allow_redirects=False)
    if case.path.startswith(PROTECTED):
        assert 400 <= response.status_code < 500, (case.path, response.status_code)


@schema.parametrize()
@fuzzed
def test_a_caller_with_credentials_never_gets_a_server_error(
    case: schemathesis.Case, rt: Runtime, auth: SmartAuthServer,
) -> None:
    _with_credentials(case, rt, auth)
    case.call_and_validate(checks=[not_a_server_error], allow_redirects=False)


# -- credentials, added to whatever the fuzzer generated ----------------------------------------

def _with_credentials(case: schemathesis.Case, rt: Runtime, auth: SmartAuthServer) -> None:
    case.headers = dict(case.headers or {})
    case.cookies = dict(case.cookies or {})
    path = case.path
    if path.startswith("/dashboard/sign-in/smart"):
        _staff_sign_in(case, rt, auth)
    elif path.startswith(("/admin", "/dashboard", "/healthz")):
        case.headers["Authorization"] = f"Bearer {ADMIN}"
    elif path.startswith("/fhir/notify"):
        case.headers["X-Outreach-Secret"] = WEBHOOK_SECRET
        _same_id(case)
    elif path.startswith("/channels/twilio"):
        _sign(case)
    elif path.startswith("/p/"):
        link = rt.settings.preferences_link(PATIENT, "en", rt.clock.now())
        assert link is not None
        case.path_parameters = {"token": link.rsplit("/", 1)[1]}
    elif path.startswith("/smart"):
        _smart(case, rt, auth)


def _same_id(case: schemathesis.Case) -> None:
    """A rest-hook PUT carries the resource named in its URL: make the URL name the fuzzed
    resource, so that it gets past that check to validation and ingest."""
    params = dict(case.path_parameters or {})
    if case.method == "PUT" and isinstance(case.body, dict) and "resource_id" in params:
        case.body["id"] = params["resource_id"]
        if isinstance(case.body.get("resourceType"), str):
            params["resource_type"] = case.body["resourceType"]
        case.path_parameters = params


def _sign(case: schemathesis.Case) -> None:
    """X-Twilio-Signature over the form as the app will read it (values as strings)."""
    if isinstance(case.body, dict):
        case.body = {str(k): v if isinstance(v, str) else str(v) for k, v in case.body.items()
                     if v is not None}
        form = case.body
    elif isinstance(case.body, str):
        form = dict(parse_qsl(case.body, keep_blank_values=True))
    else:
        form = {}
    url = PUBLIC + case.formatted_path
    if case.query:
        url += "?" + urlencode(case.query, doseq=True)
    case.headers["X-Twilio-Signature"] = twilio_signature(AUTH_TOKEN, url, form)


def _pending_cookie(rt: Runtime, auth: SmartAuthServer, callback: str) -> tuple[str, str]:
    """(sealed launch cookie, its state), as our launch would have set them."""
    endpoints = SmartEndpoints(authorize=f"{auth.base_url}/authorize",
                               token=f"{auth.base_url}/token")
    pending = new_pending_launch(rt.settings, auth.fhir_base, endpoints, callback=callback)
    return CookieBox(SMART_SECRET).seal_launch(pending), pending.state


def _staff_sign_in(case: schemathesis.Case, rt: Runtime, auth: SmartAuthServer) -> None:
    case.query = dict(case.query or {})
    if case.path.endswith("/callback"):
        cookie, case.query["state"] = _pending_cookie(rt, auth, CALLBACK)
        case.cookies[STAFF_LAUNCH_COOKIE] = cookie
    else:
        case.query["iss"] = auth.fhir_base


def _smart(case: schemathesis.Case, rt: Runtime, auth: SmartAuthServer) -> None:
    """The allowed EHR as `iss`, a sealed launch cookie with its `state`, a live session."""
    box = CookieBox(SMART_SECRET)
    case.query = dict(case.query or {})
    if case.path in ("/smart/launch", "/smart/standalone"):
        case.query["iss"] = auth.fhir_base
    elif case.path == "/smart/callback":
        case.cookies[LAUNCH_COOKIE], case.query["state"] = _pending_cookie(
            rt, auth, "/smart/callback")
    elif case.path in ("/smart/timeline", "/smart/reply", "/smart/tasks/done"):
        session = SmartSession(PATIENT, auth.fhir_base, "fuzz-access-token",
                               datetime.now(UTC) + timedelta(hours=1), fhir_user="Practitioner/f")
        case.cookies[SESSION_COOKIE] = box.seal_session(session)
        if isinstance(case.body, dict):  # past the CSRF check, into the action itself
            opened = box.open_session(case.cookies[SESSION_COOKIE], datetime.now(UTC))
            assert opened is not None
            case.body["csrf"] = csrf_token(SMART_SECRET, opened)
    case.cookies.pop(STAFF_COOKIE, None)


# -- what the fuzzers found: each once a 500, now a 400 with nothing stored ---------------------

def _heartbeat(*parameters: dict[str, Any], entries: list[Any] | None = None) -> dict[str, Any]:
    """A topic notification in the R4 shape with these status parameters."""
    status = {"resourceType": "Parameters", "parameter": list(parameters)}
    return {"resourceType": "Bundle", "type": "history",
            "entry": [{"resource": status}, *(entries or [])]}


SUBSCRIPTION = {"name": "subscription", "valueReference": {"reference": "Subscription/s1"}}
HEARTBEAT = {"name": "type", "valueCode": "heartbeat"}
EVENTS = {"name": "type", "valueCode": "event-notification"}


def _event(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"name": "notification-event", "part": list(parts)}


FOUND: dict[str, dict[str, Any]] = {
    "a subscription given as a string": _heartbeat(
        {"name": "subscription", "valueString": "Subscription/s1"}, HEARTBEAT),
    "a type given as a Coding": _heartbeat(
        SUBSCRIPTION, {"name": "type", "valueCoding": {"code": "heartbeat"}}),
    "an event timestamp that is no instant": _heartbeat(
        SUBSCRIPTION, EVENTS, _event({"name": "event-number", "valueString": "1"},
                                     {"name": "timestamp", "valueString": "garbage"})),
    "an event focus given as a string": _heartbeat(
        SUBSCRIPTION, EVENTS, _event({"name": "focus", "valueString": "Appointment/a1"})),
    "a null parameter list": {"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": {"resourceType": "Parameters", "parameter": None}}]},
    "a topic longer than its column": _heartbeat(
        SUBSCRIPTION, HEARTBEAT, {"name": "topic", "valueCanonical": "http://t/" + "x" * 300}),
    "a status that is no subscription status": _heartbeat(
        SUBSCRIPTION, HEARTBEAT, {"name": "status", "valueCode": "not-a-status-at-all"}),
    "an event count past 64 bits": _heartbeat(
        SUBSCRIPTION, HEARTBEAT,
        {"name": "events-since-subscription-start", "valueString": "9" * 30}),
    "an entry whose resourceType is null": _heartbeat(
        SUBSCRIPTION, HEARTBEAT, entries=[{"resource": {"resourceType": None}}]),
    "an entry whose resourceType is empty": _heartbeat(
        SUBSCRIPTION, HEARTBEAT, entries=[{"resource": {"resourceType": ""}}]),
}


@pytest.mark.parametrize("bundle", FOUND.values(), ids=FOUND.keys())
def test_a_malformed_topic_notification_is_refused_with_an_outcome(
    rt: Runtime, bundle: dict[str, Any],
) -> None:
    client = TestClient(APP)
    response = client.post("/fhir/notify", json=bundle, headers={
        "X-Outreach-Secret": WEBHOOK_SECRET, "Content-Type": "application/fhir+json"})
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(SubscriptionStatus)) == 0


def test_a_rest_hook_resource_containing_a_typeless_resource_is_refused(rt: Runtime) -> None:
    appointment = {"resourceType": "Appointment", "id": "a1", "status": "booked",
                   "participant": [{"status": "accepted"}],
                   "contained": [{"resourceType": None, "id": "x"}]}
    response = TestClient(APP).put("/fhir/notify/Appointment/a1", json=appointment, headers={
        "X-Outreach-Secret": WEBHOOK_SECRET, "Content-Type": "application/fhir+json"})
    assert response.status_code == 400, response.text
    assert "not valid R4" in response.json()["issue"][0]["diagnostics"]
