"""Staff sign-in to the managers' dashboard by the SMART standalone launch: the EHR's sign-in
page says who the user is (id_token, fhirUser), and the dashboard's own session cookie follows.

The flow is the clinician view's (outreach.staff.smart), with its own redirect URL, scopes
(who the user is, nothing of the chart) and no `launch`: no patient is opened."""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Cookie, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from outreach.api.deps import RuntimeDep
from outreach.api.pages import page_headers, templates
from outreach.core.settings import Settings
from outreach.staff.signin import (
    COOKIE,
    COOKIE_PATH,
    SESSION,
    seal_staff_member,
    smart_sign_in_on,
    staff_types,
)
from outreach.staff.smart import (
    CookieBox,
    LaunchError,
    PendingLaunch,
    allowed_issuer,
    authorize_url,
    client_auth,
    discover,
    new_pending_launch,
)
from outreach.staff.smart.identity import staff_member
from outreach.staff.smart.launch import MAX_PARAM_LENGTH, refusal, token_response
from outreach.staff.smart.session import LAUNCH_TTL_SECONDS

log = logging.getLogger(__name__)

PREFIX = "/dashboard/sign-in/smart"
CALLBACK = f"{PREFIX}/callback"
LAUNCH_COOKIE = "outreach_staff_launch"
# The EHR sends the browser back to us: its form posts nowhere, so no form-action is needed.
PAGE_HEADERS = page_headers(form_action="'self'")
AGAIN = "Sign in again; if it keeps failing, tell IT."

router = APIRouter(prefix=PREFIX, tags=["dashboard"], include_in_schema=False)
LaunchCookie = Annotated[str | None, Cookie(alias=LAUNCH_COOKIE)]
Param = Annotated[str | None, Query(max_length=MAX_PARAM_LENGTH)]


def ehr_choices(settings: Settings) -> list[tuple[str, str]]:
    """(sign-in link, EHR name) for each EHR staff may sign in at; none when it is off."""
    if not smart_sign_in_on(settings):
        return []
    return [(str(httpx.URL(PREFIX, params={"iss": iss})), httpx.URL(iss).host)
            for iss in settings.smart_issuers]


def _refused(request: Request, settings: Settings, exc: LaunchError) -> HTMLResponse:
    """The sign-in page again, saying what went wrong: the user can try once more from it."""
    return templates.TemplateResponse(
        request, "dashboard/sign_in.html",
        {"error": exc.message, "hint": exc.hint or AGAIN, "ehrs": ehr_choices(settings),
         "tokens": settings.admin_tokens is not None, "status": exc.status},
        status_code=exc.status, headers=PAGE_HEADERS)


def _box(settings: Settings) -> CookieBox:
    if not smart_sign_in_on(settings):
        raise LaunchError("Sign-in with the EHR is not set up on this server.", 503,
                          hint="IT: see docs/smart.md, staff sign-in (OUTREACH_SMART_CLIENT_ID, "
                               "OUTREACH_SMART_SESSION_SECRET, OUTREACH_PUBLIC_URL).")
    assert settings.smart_session_secret is not None
    return CookieBox(settings.smart_session_secret.get_secret_value())


def _secure(settings: Settings) -> bool:
    return str(settings.public_url).startswith("https://")


def _http(settings: Settings) -> httpx.AsyncClient:
    # No redirects: every endpoint comes from the allow-listed EHR and must answer itself.
    return httpx.AsyncClient(timeout=settings.fhir_timeout_seconds, follow_redirects=False)


@router.get("", response_class=HTMLResponse)
async def start(request: Request, rt: RuntimeDep, iss: Param = None) -> Response:
    """To the EHR's sign-in page, with PKCE and a state bound to this browser."""
    settings = rt.settings
    try:
        box = _box(settings)
        issuer = allowed_issuer(settings, iss or settings.smart_issuers[0])
        async with _http(settings) as client:
            endpoints = await discover(client, issuer)
        client_auth(settings).check(endpoints)
    except LaunchError as exc:
        log.info("staff sign-in refused before the EHR (%s): %s", exc.status, exc.message)
        return _refused(request, settings, exc)
    pending = new_pending_launch(settings, issuer, endpoints, callback=CALLBACK)
    response = RedirectResponse(
        authorize_url(settings, endpoints, pending, None, scope=settings.smart_staff_scopes),
        status_code=302, headers=PAGE_HEADERS)
    # Lax, not Strict: the EHR's redirect back to us is a cross-site navigation.
    response.set_cookie(LAUNCH_COOKIE, box.seal_launch(pending), max_age=LAUNCH_TTL_SECONDS,
                        path=PREFIX, httponly=True, samesite="lax", secure=_secure(settings))
    log.info("staff sign-in at %s: sent to authorize", issuer)
    return response


def _pending(box: CookieBox, settings: Settings, cookie: str | None, state: str | None
             ) -> PendingLaunch:
    pending = box.open_launch(cookie)
    # A clinician-view launch cookie is sealed with the same key: its redirect URL tells it out.
    if pending is None or pending.redirect_uri != settings.public(CALLBACK):
        raise LaunchError("This sign-in has expired or was started in another browser.")
    if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
        raise LaunchError("This sign-in does not match the one this browser started.")
    return pending


async def _member(settings: Settings, pending: PendingLaunch, code: str) -> str:
    assert settings.smart_client_id is not None
    async with _http(settings) as client:
        body = await token_response(client, pending, code, client_auth(settings))
        return await staff_member(client, pending, body, settings.smart_client_id,
                                  staff_types(settings), datetime.now(UTC))


@router.get("/callback", response_class=HTMLResponse)
async def callback(request: Request, rt: RuntimeDep, launch_cookie: LaunchCookie = None,
                   code: Param = None, state: Param = None, error: Param = None,
                   error_description: Param = None) -> Response:
    settings = rt.settings
    try:
        box = _box(settings)
        pending = _pending(box, settings, launch_cookie, state)
        if error or not code:
            said = f" ({refusal(error, error_description)})" if error else ""
            raise LaunchError(f"The EHR did not sign you in{said}.", 403)
        member = await _member(settings, pending, code)
    except LaunchError as exc:
        log.info("staff sign-in refused (%s): %s", exc.status, exc.message)
        refused = _refused(request, settings, exc)
        refused.delete_cookie(LAUNCH_COOKIE, path=PREFIX)
        return refused
    log.info("staff sign-in: %s at %s", member, pending.iss)
    return _signed_in(request, settings, member)


def _signed_in(request: Request, settings: Settings, member: str) -> HTMLResponse:
    """A page that moves on to the dashboard by itself. Not a redirect: after the EHR's
    cross-site redirect, a browser would not send the SameSite=Strict session cookie with it."""
    context: dict[str, Any] = {"member": member, "status": 200}
    response = templates.TemplateResponse(request, "dashboard/signed_in.html", context,
                                          headers=PAGE_HEADERS)
    response.set_cookie(COOKIE, seal_staff_member(settings, member, datetime.now(UTC)),
                        max_age=int(SESSION.total_seconds()), path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=_secure(settings))
    response.delete_cookie(LAUNCH_COOKIE, path=PREFIX)
    return response
