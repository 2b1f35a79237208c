"""Staff sign-in to the dashboard by the SMART standalone launch, against the real local
authorization server through our API under uvicorn: discovery, PKCE, state, the id_token's
checks, the fhirUser types let in, and a clear page (never a 500) for each way it fails."""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from outreach.core.ports import Runtime
from outreach.core.settings import SettingsError, load_settings
from outreach.staff.signin import COOKIE
from outreach.staff.smart.launch import challenge_of
from outreach.staff.smart.session import LAUNCH_COOKIE as CLINICIAN_LAUNCH_COOKIE
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.smart_auth_server import (
    CLIENT_ID,
    CLIENT_SECRET,
    SmartAuthServer,
    follow_to_callback,
)

SESSION_SECRET = "smart-session-secret-for-tests-" + "s" * 16
STAFF_LAUNCH_COOKIE = "outreach_staff_launch"
DOCTOR = "Practitioner/doc-1"


@pytest.fixture
def auth(api_server: ApiServer) -> Iterator[SmartAuthServer]:
    with SmartAuthServer(f"{api_server.url}/smart/callback") as server:
        server.state.also_redirect_to.add(f"{api_server.url}/dashboard/sign-in/smart/callback")
        server.state.user = DOCTOR
        yield server


@pytest.fixture
def smart_settings(api_server: ApiServer, auth: SmartAuthServer) -> dict[str, Any]:
    return {"public_url": api_server.url, "smart_client_id": CLIENT_ID,
            "smart_allowed_iss": auth.fhir_base, "smart_session_secret": SESSION_SECRET}


@pytest.fixture
def rt(make_runtime: RuntimeFactory, smart_settings: dict[str, Any]) -> Runtime:
    return make_runtime(**smart_settings)


@pytest.fixture
def client(api_server: ApiServer) -> Iterator[httpx.Client]:
    """Keeps cookies, follows no redirect: each hop is seen."""
    with httpx.Client(base_url=api_server.url, follow_redirects=False, timeout=10) as client:
        yield client


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def _text(response: httpx.Response) -> str:
    return " ".join(html.unescape(response.text).split())


def _sign_in(client: httpx.Client) -> httpx.Response:
    """The whole standalone sign-in as a browser does it; returns our callback's answer."""
    started = client.get("/dashboard/sign-in/smart")
    assert started.status_code == 302, started.text
    return client.get(follow_to_callback(client, started.headers["location"]))


def test_the_sign_in_page_offers_the_ehr_and_goes_there_with_pkce_and_no_launch(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer, api_server: ApiServer
) -> None:
    page = client.get("/dashboard/sign-in")
    assert page.status_code == 200
    assert 'href="/dashboard/sign-in/smart?iss=' in page.text
    assert "Sign in with 127.0.0.1" in _text(page)
    assert 'id="token"' not in page.text  # no admin tokens configured: no token form

    started = client.get("/dashboard/sign-in/smart")
    assert started.status_code == 302
    location = started.headers["location"]
    assert location.startswith(f"{auth.base_url}/authorize?")
    query = _query(location)
    assert query["scope"].split() == ["openid", "fhirUser"]  # who, nothing of the chart
    assert "launch" not in query
    assert query["redirect_uri"] == f"{api_server.url}/dashboard/sign-in/smart/callback"
    assert query["aud"] == auth.fhir_base and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    cookie = started.headers["set-cookie"]
    assert cookie.startswith(f"{STAFF_LAUNCH_COOKIE}=") and query["state"] not in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/dashboard/sign-in/smart" in cookie


def test_a_practitioner_signs_in_and_sees_the_dashboard(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    assert client.get("/dashboard").headers["location"] == "/dashboard/sign-in"
    signed_in = _sign_in(client)
    assert signed_in.status_code == 200, signed_in.text
    assert f"Signed in as {DOCTOR}" in _text(signed_in)
    assert '<meta http-equiv="refresh" content="0; url=/dashboard">' in signed_in.text
    (token_request,) = auth.state.token_requests
    assert challenge_of(token_request["code_verifier"]) == \
        auth.state.authorize_requests[0]["code_challenge"]
    cookies = signed_in.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(f"{COOKIE}="))
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/dashboard" in session
    assert "doc-1" not in session  # encrypted
    assert any(c.startswith(f'{STAFF_LAUNCH_COOKIE}=""') for c in cookies)  # single use

    board = client.get("/dashboard")
    assert board.status_code == 200, board.text
    assert f"Signed in as {DOCTOR}" in _text(board)
    assert "Appointments" in board.text


@pytest.mark.parametrize("secret, signed_in", [
    (CLIENT_SECRET, True), ("a-secret-the-ehr-never-issued", False)])
def test_a_confidential_client_signs_staff_in_with_its_secret(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer, secret: str, signed_in: bool,
) -> None:
    auth.state.client_auth = "client_secret_basic"
    make_runtime(**smart_settings, smart_client_auth="client_secret_basic",
                 smart_client_secret=secret)
    answer = _sign_in(client)
    (headers,) = auth.state.token_headers
    assert headers["authorization"].startswith("Basic ")
    if signed_in:
        assert answer.status_code == 200 and f"Signed in as {DOCTOR}" in _text(answer)
    else:  # the EHR's own words, on the sign-in page
        assert answer.status_code == 400
        assert "(invalid_client: client authentication failed: wrong client id or secret)" \
            in _text(answer)


def test_the_same_code_cannot_sign_in_twice(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    started = client.get("/dashboard/sign-in/smart")
    back = follow_to_callback(client, started.headers["location"])
    assert client.get(back).status_code == 200
    client.cookies.clear()
    again = client.get(back)  # replayed: no launch cookie in this browser any more
    assert again.status_code == 400
    assert "expired or was started in another browser" in _text(again)


@pytest.mark.parametrize(("user", "types", "shown"), [
    ("Patient/pat-1", None, "A Patient may not open the managers' dashboard"),
    ("RelatedPerson/rp-1", None, "A RelatedPerson may not open"),
    ("PractitionerRole/role-1", "Practitioner", "A PractitionerRole may not open"),
])
def test_only_the_allowed_kinds_of_user_are_let_in(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer, user: str, types: str | None, shown: str
) -> None:
    make_runtime(**smart_settings, **({"dashboard_staff_types": types} if types else {}))
    auth.state.user = user
    refused = _sign_in(client)
    assert refused.status_code == 403
    assert shown in _text(refused)
    assert "Sign in with 127.0.0.1" in _text(refused)  # and can try again from there
    assert not any(c.startswith(f"{COOKIE}=") for c in refused.headers.get_list("set-cookie"))
    assert client.get("/dashboard").status_code == 303


def test_narrowing_the_allowed_types_signs_a_member_out(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer
) -> None:
    make_runtime(**smart_settings)
    auth.state.user = "PractitionerRole/role-1"
    assert _sign_in(client).status_code == 200
    assert client.get("/dashboard").status_code == 200
    make_runtime(**smart_settings, dashboard_staff_types="Practitioner")
    assert client.get("/dashboard").headers["location"] == "/dashboard/sign-in"


@pytest.mark.parametrize(("spoil", "status", "shown"), [
    ({"aud": "someone-else"}, 502, "could not be verified (InvalidAudienceError)"),
    ({"iss": "https://evil.example"}, 502, "could not be verified (InvalidIssuerError)"),
    ({"exp": int(time.time()) - 3600}, 400, "This sign-in has expired"),
    ({"fhirUser": "https://evil.example/fhir/Practitioner/doc-1"}, 403, "in a form we cannot use"),
    ({"fhirUser": None}, 403, "did not say who signed in (no fhirUser)"),
])
def test_an_id_token_that_does_not_check_out_is_refused(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer, spoil: dict[str, Any],
    status: int, shown: str
) -> None:
    auth.state.id_token_claims = spoil
    refused = _sign_in(client)
    assert refused.status_code == status
    assert shown in _text(refused)
    assert client.get("/dashboard").status_code == 303


def test_an_id_token_signed_with_another_key_is_refused(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.stranger_key = True
    refused = _sign_in(client)
    assert refused.status_code == 502
    assert "could not be verified (InvalidSignatureError)" in _text(refused)


@pytest.mark.parametrize("raw", [
    "not-a-jwt",
    base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=") + ".e30.c2ln",
    "a" * 20_000,
])
def test_a_hostile_id_token_is_a_clear_page_not_a_500(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer, raw: str
) -> None:
    auth.state.id_token_raw = raw
    refused = _sign_in(client)
    assert refused.status_code == 502
    assert "sign-in" in _text(refused) and client.get("/dashboard").status_code == 303


def test_a_refusal_at_the_ehr_and_a_foreign_state_give_clear_pages(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.deny = True
    denied = _sign_in(client)
    assert denied.status_code == 403
    assert "The EHR did not sign you in (access_denied)." in _text(denied)
    auth.state.deny = False
    started = client.get("/dashboard/sign-in/smart")
    back = follow_to_callback(client, started.headers["location"])
    forged = back.replace(f"state={_query(back)['state']}", "state=not-the-one")
    mismatch = client.get(forged)
    assert mismatch.status_code == 400
    assert "does not match the one this browser started" in _text(mismatch)
    assert auth.state.token_requests == []  # no code was traded


def test_a_clinician_view_launch_cannot_complete_a_staff_sign_in(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    """Both launch cookies are sealed with keys from the same secret: the redirect URL each
    pending launch holds keeps them apart."""
    auth.state.standalone_patient = "pat-1"
    started = client.get("/smart/standalone")
    clinician = started.cookies[CLINICIAN_LAUNCH_COOKIE]
    back = follow_to_callback(client, started.headers["location"])
    state = _query(back)["state"]
    crossed = client.get("/dashboard/sign-in/smart/callback",
                         params={"code": "x", "state": state},
                         headers={"Cookie": f"{STAFF_LAUNCH_COOKIE}={clinician}"})
    assert crossed.status_code == 400
    assert "expired or was started in another browser" in _text(crossed)


def test_an_unknown_iss_and_a_server_without_smart_are_refused_on_our_page(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer
) -> None:
    make_runtime(**smart_settings)
    foreign = client.get("/dashboard/sign-in/smart", params={"iss": "https://evil.example/fhir"})
    assert foreign.status_code == 400
    assert "not allowed" in _text(foreign) and "location" not in foreign.headers
    make_runtime(public_url=smart_settings["public_url"])
    off = client.get("/dashboard/sign-in/smart")
    assert off.status_code == 503 and "not set up" in _text(off)
    assert "Sign in with" not in client.get("/dashboard/sign-in").text
    assert client.get("/dashboard/sign-in/smart/callback?code=x&state=y").status_code == 503


def test_the_ehr_without_openid_keys_is_refused(
    rt: Runtime, client: httpx.Client, auth: SmartAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = auth._server
    original = server.configuration
    monkeypatch.setattr(server, "configuration",
                        lambda: {k: v for k, v in original().items() if k != "jwks_uri"})
    refused = _sign_in(client)
    assert refused.status_code == 502
    assert "names no OpenID issuer or keys" in _text(refused)


@pytest.mark.parametrize(("name", "value"), [
    ("smart_staff_scopes", "openid patient/*.read"),
    ("smart_staff_scopes", "launch openid fhirUser"),
    ("dashboard_staff_types", "Patient"),
    ("dashboard_staff_types", "Practitioner,RelatedPerson"),
])
def test_settings_refuse_a_staff_sign_in_that_could_let_anyone_in(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.upper()):
        load_settings(**{name: value})
