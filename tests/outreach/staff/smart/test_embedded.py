"""The view inside an EHR's cross-site frame, over HTTP: the frame's callback finishes without
the launch cookie (the launch is sealed in `state`), the session travels as a short-lived page
token, and only the EHR's origins may frame the pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi import Request

from outreach.api.routes.smart import current_session
from outreach.core.ports import Runtime
from outreach.staff.smart import CookieBox
from outreach.staff.smart.session import LAUNCH_COOKIE, SESSION_COOKIE, SmartSession
from tests.conftest import RuntimeFactory
from tests.outreach.staff.smart.conftest import PATIENT_ID, SESSION_SECRET
from tests.support.api_server import ApiServer
from tests.support.smart_auth_server import SmartAuthServer, follow_to_callback

IN_A_FRAME = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}


def _frame_callback(auth: SmartAuthServer, api: ApiServer, launch: str = "xyz") -> str:
    """Launch and sign in as a browser that keeps no cookie; the callback URL it is sent to."""
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=10) as browser:
        started = browser.get("/smart/launch", params={"iss": auth.fhir_base, "launch": launch},
                              headers=IN_A_FRAME)
        assert started.status_code == 302, started.text
        return follow_to_callback(browser, started.headers["location"])


def _no_cookie_get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        return browser.get(url, headers=headers)


def test_a_frame_without_cookies_finishes_the_launch_with_a_page_token(
    smart_rt: Runtime, auth: SmartAuthServer, api_server: ApiServer
) -> None:
    callback = _no_cookie_get(_frame_callback(auth, api_server), IN_A_FRAME)
    assert callback.status_code == 303, callback.text
    target = callback.headers["location"]
    assert target.startswith(f"{api_server.url}/smart/timeline?session_token=")
    assert "set-cookie" not in callback.headers  # nothing this frame would keep anyway
    assert PATIENT_ID not in target  # sealed, not merely signed
    page = _no_cookie_get(target)
    assert page.status_code == 200 and f"Patient/{PATIENT_ID}" in page.text
    (token_request,) = auth.state.token_requests
    assert token_request["code_verifier"]  # PKCE still bound the code to this launch


def test_a_callback_url_opened_outside_a_frame_without_the_cookie_is_refused(
    smart_rt: Runtime, auth: SmartAuthServer, api_server: ApiServer
) -> None:
    """Someone sent the callback URL of their own sign-in: a top-level page, no cookie."""
    response = _no_cookie_get(_frame_callback(auth, api_server),
                              {"Sec-Fetch-Dest": "document"})
    assert response.status_code == 400 and "another browser" in response.text
    assert auth.state.token_requests == []  # the code was never spent


def test_without_the_cookieless_setting_a_frame_needs_its_cookie(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], auth: SmartAuthServer,
    api_server: ApiServer,
) -> None:
    make_runtime(**smart_settings, smart_cookieless=False)
    response = _no_cookie_get(_frame_callback(auth, api_server), IN_A_FRAME)
    assert response.status_code == 400 and auth.state.token_requests == []


def test_a_forged_or_foreign_state_does_not_open_a_launch(
    smart_rt: Runtime, auth: SmartAuthServer, api_server: ApiServer, client: httpx.Client
) -> None:
    back = _frame_callback(auth, api_server)
    query = {k: v[0] for k, v in parse_qs(urlparse(back).query).items()}
    client.get("/smart/launch", params={"iss": auth.fhir_base, "launch": "xyz"})
    launch_cookie = client.cookies[LAUNCH_COOKIE]  # sealed for another purpose
    for state in (query["state"][:-4] + "AAAA", launch_cookie):
        response = _no_cookie_get(f"{api_server.url}/smart/callback?"
                                  f"{httpx.QueryParams(code=query['code'], state=state)}",
                                  IN_A_FRAME)
        assert response.status_code == 400, state
    assert auth.state.token_requests == []


def test_a_page_token_is_not_a_session_cookie_nor_the_reverse(
    smart_rt: Runtime, auth: SmartAuthServer, api_server: ApiServer, client: httpx.Client
) -> None:
    target = _no_cookie_get(_frame_callback(auth, api_server), IN_A_FRAME).headers["location"]
    token = parse_qs(urlparse(target).query)["session_token"][0]
    client.cookies.set(SESSION_COOKIE, token)
    assert client.get("/smart/timeline").status_code == 401
    client.cookies.clear()
    assert client.get(follow_to_callback(client, client.get(
        "/smart/launch", params={"iss": auth.fhir_base, "launch": "xyz"}
    ).headers["location"])).status_code == 303
    cookie = client.cookies[SESSION_COOKIE]
    assert _no_cookie_get(f"{api_server.url}/smart/timeline?session_token={cookie}"
                          ).status_code == 401


def test_the_page_carries_a_token_only_where_cookies_do_not_work(
    smart_rt: Runtime, auth: SmartAuthServer, api_server: ApiServer, client: httpx.Client
) -> None:
    settings = smart_rt.settings
    target = _no_cookie_get(_frame_callback(auth, api_server), IN_A_FRAME).headers["location"]
    token = parse_qs(urlparse(target).query)["session_token"][0]

    def request(query: str = "", cookie: str | None = None, header: str | None = None
                ) -> Request:
        headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())] if cookie else []
        if header:
            headers.append((b"x-outreach-session-token", header.encode()))
        return Request({"type": "http", "method": "GET", "path": "/smart/timeline",
                        "query_string": query.encode(), "headers": headers})

    by_query = current_session(request(f"session_token={token}"), settings)
    by_field = current_session(request(), settings, token=token)
    by_header = current_session(request(header=token), settings)
    assert by_query is not None and by_query == by_field == by_header
    assert by_query.patient == f"Patient/{PATIENT_ID}" and by_query.iss == auth.fhir_base
    assert current_session(request(), settings) is None
    assert current_session(request(), settings, token="gAAAAforged") is None


@pytest.mark.parametrize("configured, expected", [
    (None, "frame-ancestors {auth_origin}"),
    ("https://ehr.hospital.example, https://portal.hospital.example:8443",
     "frame-ancestors https://ehr.hospital.example https://portal.hospital.example:8443"),
])
def test_only_the_ehrs_may_frame_the_view(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], auth: SmartAuthServer,
    client: httpx.Client, configured: str | None, expected: str,
) -> None:
    make_runtime(**smart_settings, smart_frame_ancestors=configured)
    for response in (client.get("/smart/timeline"),
                     client.get("/smart/launch", params={"iss": auth.fhir_base,
                                                         "launch": "xyz"})):
        policy = response.headers["content-security-policy"]
        assert policy.endswith(expected.format(auth_origin=auth.base_url)), policy
        assert "x-frame-options" not in response.headers


def test_another_sites_form_post_cannot_act_with_the_session_cookie(
    smart_rt: Runtime, auth: SmartAuthServer, client: httpx.Client
) -> None:
    """Over https the cookie is SameSite=None, so a browser sends it with any site's form post:
    a post only acts from our own pages, or with the page's token."""
    settings = smart_rt.settings
    assert client.get(follow_to_callback(client, client.get(
        "/smart/launch", params={"iss": auth.fhir_base, "launch": "xyz"}
    ).headers["location"])).status_code == 303
    cookie = client.cookies[SESSION_COOKIE]

    def post(site: str, origin: str | None = None, token: str | None = None) -> object:
        headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())]
        if site:
            headers.append((b"sec-fetch-site", site.encode()))
        if origin:
            headers.append((b"origin", origin.encode()))
        scope = {"type": "http", "method": "POST", "path": "/smart/timeline",
                 "query_string": b"", "headers": headers}
        return current_session(Request(scope), settings, token=token)

    assert post("same-origin") is not None
    assert post("cross-site") is None and post("same-site") is None
    assert post("", origin="https://evil.example") is None
    assert post("", origin=str(settings.public_url).rstrip("/")) is not None
    session = post("same-origin")
    assert isinstance(session, SmartSession)
    token = CookieBox(SESSION_SECRET).seal_page(session)
    assert post("cross-site", token=token) == session  # the token is proof enough


def test_the_page_token_names_the_patient_of_its_page_even_when_the_cookie_names_another(
    smart_rt: Runtime, auth: SmartAuthServer, api_server: ApiServer, client: httpx.Client
) -> None:
    """A clinician opened another chart since (a new cookie): a form on the old page still
    acts on the old page's patient."""
    auth.register_launch("second-chart", "pat-2")
    target = _no_cookie_get(_frame_callback(auth, api_server), IN_A_FRAME).headers["location"]
    token = parse_qs(urlparse(target).query)["session_token"][0]
    assert client.get(follow_to_callback(client, client.get(
        "/smart/launch", params={"iss": auth.fhir_base, "launch": "second-chart"}
    ).headers["location"])).status_code == 303
    assert "Patient/pat-2" in client.get("/smart/timeline").text
    page = client.get("/smart/timeline", params={"session_token": token})
    assert f"Patient/{PATIENT_ID}" in page.text and "Patient/pat-2" not in page.text
