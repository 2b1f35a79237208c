"""The SMART launch against a real local authorization server, through our API under uvicorn:
issuer allow-list, state bound to the browser, PKCE, token errors, the session cookie."""

from __future__ import annotations

import asyncio
import html
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from outreach.core.ports import Runtime
from outreach.core.settings import load_settings
from outreach.staff.smart import ClientAuth, LaunchError, PendingLaunch, exchange_code
from outreach.staff.smart.launch import challenge_of
from outreach.staff.smart.session import LAUNCH_COOKIE, SESSION_COOKIE
from tests.conftest import RuntimeFactory
from tests.outreach.staff.smart.conftest import PATIENT_ID
from tests.support.api_server import ApiServer
from tests.support.smart_auth_server import (
    CLIENT_ID,
    SmartAuthServer,
    ehr_sign_in,
    follow_to_callback,
)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def _launch(client: httpx.Client, auth: SmartAuthServer, launch: str = "xyz") -> httpx.Response:
    return client.get("/smart/launch", params={"iss": auth.fhir_base, "launch": launch})


def test_ehr_launch_redirects_to_authorize_with_pkce_state_and_launch(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer, api_server: ApiServer
) -> None:
    response = _launch(client, auth)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{auth.base_url}/authorize?")
    query = _query(location)
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"{api_server.url}/smart/callback"
    # The least the page needs, in SMART v2 syntax (the server advertises permission-v2).
    assert query["scope"].split() == ["launch", "openid", "fhirUser", "patient/Patient.r",
                                      "patient/Appointment.rs"]
    assert query["aud"] == auth.fhir_base and query["launch"] == "xyz"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 32
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{LAUNCH_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/smart" in cookie
    assert "Secure" not in cookie  # the public URL is http here
    assert query["state"] not in cookie  # encrypted, not merely signed


def test_each_launch_gets_its_own_state_and_verifier(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    first, second = (_query(_launch(client, auth).headers["location"]) for _ in range(2))
    assert first["state"] != second["state"]
    assert first["code_challenge"] != second["code_challenge"]


def test_a_full_ehr_launch_lands_on_the_timeline_with_no_patient_in_any_url(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer, api_server: ApiServer
) -> None:
    callback = ehr_sign_in(client, auth)
    assert callback.status_code == 303
    assert callback.headers["location"] == f"{api_server.url}/smart/timeline"
    (token_request,) = auth.state.token_requests
    assert token_request["code_verifier"] and token_request["client_id"] == CLIENT_ID
    assert challenge_of(token_request["code_verifier"]) == \
        auth.state.authorize_requests[0]["code_challenge"]
    cookies = callback.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in session and "SameSite=lax" in session and PATIENT_ID not in session
    assert any(c.startswith(f'{LAUNCH_COOKIE}=""') for c in cookies)  # single use
    page = client.get("/smart/timeline")
    assert page.status_code == 200
    assert f"Patient/{PATIENT_ID}" in page.text
    assert page.headers["cache-control"] == "no-store"
    urls = [*(r["redirect_uri"] for r in auth.state.authorize_requests),
            callback.headers["location"]]
    assert not any(PATIENT_ID in url for url in urls)


@pytest.mark.parametrize("iss", [
    "https://evil.example/fhir",
    "{fhir}.evil.example",
    "{fhir}/../../evil",
    "http://evil.example/?{fhir}",
    "javascript:alert(1)",
    "",
])
def test_an_unknown_or_malformed_iss_is_a_400_page_and_no_redirect(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer, iss: str
) -> None:
    response = client.get("/smart/launch",
                          params={"iss": iss.format(fhir=auth.fhir_base), "launch": "xyz"})
    assert response.status_code == 400
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert "text/html" in response.headers["content-type"]
    assert "EHR" in response.text
    assert auth.state.authorize_requests == []


def test_an_allowed_iss_with_a_trailing_slash_is_the_same_ehr(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    response = client.get("/smart/launch", params={"iss": auth.fhir_base + "/", "launch": "x"})
    assert response.status_code == 302
    assert _query(response.headers["location"])["aud"] == auth.fhir_base


def test_a_launch_without_launch_context_is_400(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    response = client.get("/smart/launch", params={"iss": auth.fhir_base})
    assert response.status_code == 400 and "location" not in response.headers


def test_an_ehr_without_smart_configuration_is_a_502_page(
    make_runtime: RuntimeFactory, smart_settings: dict[str, object], client: httpx.Client,
    api_server: ApiServer,
) -> None:
    # An allow-listed base that does not serve .well-known/smart-configuration (our own API).
    make_runtime(**{**smart_settings, "smart_allowed_iss": f"{api_server.url}/fhir"})
    response = client.get("/smart/launch", params={"iss": f"{api_server.url}/fhir",
                                                   "launch": "xyz"})
    assert response.status_code == 502 and "location" not in response.headers
    assert "SMART configuration" in response.text


def test_a_state_that_does_not_match_the_browser_is_400_and_no_session(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    back = follow_to_callback(client, _launch(client, auth).headers["location"])
    query = _query(back)
    for state in ("forged-" + query["state"], ""):
        response = client.get("/smart/callback", params={"code": query["code"], "state": state})
        assert response.status_code == 400, state
        assert "does not match" in response.text
        assert "location" not in response.headers
    assert auth.state.token_requests == []  # the code was never spent
    assert client.get("/smart/timeline").status_code == 401


def test_a_callback_in_a_browser_that_never_launched_is_400(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer, api_server: ApiServer
) -> None:
    back = follow_to_callback(client, _launch(client, auth).headers["location"])
    with httpx.Client(follow_redirects=False, timeout=10) as other_browser:
        response = other_browser.get(back)
    assert response.status_code == 400
    assert "another browser" in response.text
    assert auth.state.token_requests == []


def test_a_replayed_code_is_refused_by_the_ehr_and_shown_as_such(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    started = _launch(client, auth)
    launch_cookie = client.cookies[LAUNCH_COOKIE]
    back = follow_to_callback(client, started.headers["location"])
    assert client.get(back).status_code == 303
    client.cookies.set(LAUNCH_COOKIE, launch_cookie)  # an attacker holding the old cookie
    replay = client.get(back)
    assert replay.status_code == 400
    assert "refused the sign-in (invalid_grant)" in replay.text


def test_access_denied_at_the_ehr_is_a_clear_400_page(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.deny = True
    response = ehr_sign_in(client, auth)
    assert response.status_code == 400
    assert "did not authorize" in response.text and "access_denied" in response.text


def test_a_failing_token_endpoint_is_a_502_page(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.token_failure = 503
    response = ehr_sign_in(client, auth)
    assert response.status_code == 502 and "token endpoint failed" in response.text
    assert client.get("/smart/timeline").status_code == 401


def test_a_token_without_patient_context_is_400(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.omit_patient = True
    response = ehr_sign_in(client, auth)
    assert response.status_code == 400 and "which patient" in response.text


def test_the_pkce_verifier_is_what_the_ehr_checks(auth: SmartAuthServer) -> None:
    """Against the authorization server directly: only the verifier of the challenge works."""
    verifier = "v" * 50

    def code() -> str:
        authorize = httpx.get(f"{auth.base_url}/authorize", params={
            "response_type": "code", "client_id": CLIENT_ID, "redirect_uri":
            auth.state.redirect_uri, "scope": "launch openid", "state": "s", "aud":
            auth.fhir_base, "launch": "xyz", "code_challenge": challenge_of(verifier),
            "code_challenge_method": "S256"})
        return _query(authorize.headers["location"])["code"]

    def exchange(code: str, verifier: str) -> object:
        pending = PendingLaunch("s", verifier, auth.fhir_base, f"{auth.base_url}/token",
                                auth.state.redirect_uri)

        async def run() -> object:
            from datetime import UTC, datetime

            async with httpx.AsyncClient() as client:
                return await exchange_code(client, pending, code, ClientAuth.public(CLIENT_ID),
                                           datetime.now(UTC))

        return asyncio.run(run())

    with pytest.raises(LaunchError, match="invalid_grant"):
        exchange(code(), "w" * 50)
    grant = exchange(code(), verifier)
    assert grant.patient == f"Patient/{PATIENT_ID}"  # type: ignore[attr-defined]


def test_standalone_launch_asks_for_a_patient_and_has_no_launch_parameter(
    smart_rt: Runtime, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.standalone_patient = "pat-9"
    started = client.get("/smart/standalone")
    assert started.status_code == 302
    query = _query(started.headers["location"])
    assert query["scope"].split()[0] == "launch/patient" and "launch" not in query
    assert query["aud"] == auth.fhir_base
    assert client.get(follow_to_callback(client, started.headers["location"])).status_code == 303
    assert "Patient/pat-9" in client.get("/smart/timeline").text


def test_the_cookies_are_secure_when_the_public_url_is_https(
    make_runtime: RuntimeFactory, smart_settings: dict[str, object], client: httpx.Client,
    auth: SmartAuthServer,
) -> None:
    make_runtime(**{**smart_settings, "public_url": "https://outreach.hospital.example"})
    response = _launch(client, auth)
    # Kept inside the EHR's cross-site frame: SameSite=None needs Secure; Partitioned (CHIPS)
    # keeps it where third-party cookies are blocked.
    cookie = response.headers["set-cookie"]
    assert "Secure" in cookie and "SameSite=none" in cookie and "Partitioned" in cookie
    assert _query(response.headers["location"])["redirect_uri"] == \
        "https://outreach.hospital.example/smart/callback"


def test_without_a_session_the_timeline_is_401_and_says_to_launch_from_the_ehr(
    smart_rt: Runtime, client: httpx.Client
) -> None:
    response = client.get("/smart/timeline")
    assert response.status_code == 401
    assert "from the patient's chart in the EHR" in html.unescape(response.text)
    client.cookies.set(SESSION_COOKIE, "gAAAAAforged")
    assert client.get("/smart/timeline").status_code == 401


def test_a_session_sealed_with_another_secret_is_not_accepted(
    make_runtime: RuntimeFactory, smart_settings: dict[str, object], client: httpx.Client,
    auth: SmartAuthServer,
) -> None:
    make_runtime(**smart_settings)
    assert ehr_sign_in(client, auth).status_code == 303
    assert client.get("/smart/timeline").status_code == 200
    make_runtime(**{**smart_settings, "smart_session_secret": "another-secret-" + "y" * 32})
    assert client.get("/smart/timeline").status_code == 401


def test_not_configured_is_a_503_page(make_runtime: RuntimeFactory, client: httpx.Client) -> None:
    make_runtime()
    response = client.get("/smart/launch", params={"iss": "https://ehr.example/fhir",
                                                   "launch": "xyz"})
    assert response.status_code == 503 and "not set up" in response.text
    assert "location" not in response.headers


def test_settings_refuse_a_missing_or_short_session_secret_and_bad_issuers() -> None:
    from outreach.core.settings import SettingsError

    with pytest.raises(SettingsError, match="OUTREACH_SMART_SESSION_SECRET: required"):
        load_settings(smart_client_id="app")
    with pytest.raises(SettingsError, match="OUTREACH_SMART_SESSION_SECRET: use at least 32"):
        load_settings(smart_client_id="app", smart_session_secret="short")
    with pytest.raises(SettingsError, match="OUTREACH_SMART_ALLOWED_ISS"):
        load_settings(smart_allowed_iss="https://ehr.example/fhir, not-a-url")
    defaulted = load_settings(fhir_base_url="https://ehr.example/fhir/")
    assert defaulted.smart_issuers == ["https://ehr.example/fhir"]
    listed = load_settings(fhir_base_url="https://ehr.example/fhir",
                           smart_allowed_iss="https://a.example/r4/, https://b.example/fhir")
    assert listed.smart_issuers == ["https://a.example/r4", "https://b.example/fhir"]
