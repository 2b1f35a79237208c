"""The SMART on FHIR clinician view: EHR and standalone launch, callback, the patient's timeline."""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Cookie, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from outreach.api.deps import RuntimeDep
from outreach.api.pages import environment, page_headers, templates
from outreach.core.ports import Runtime
from outreach.core.settings import Settings
from outreach.staff.smart import (
    CookieBox,
    LaunchError,
    allowed_issuer,
    authorize_url,
    discover,
    new_pending_launch,
)
from outreach.staff.smart.clinician import clinician_grant
from outreach.staff.smart.launch import MAX_PARAM_LENGTH
from outreach.staff.smart.session import (
    COOKIE_PATH,
    LAUNCH_COOKIE,
    LAUNCH_TTL_SECONDS,
    SESSION_COOKIE,
    SmartSession,
)
from outreach.staff.smart.staff_actions import NOTICES, OK_NOTICES, csrf_token, sender_note
from outreach.staff.smart.view import timeline_view

log = logging.getLogger(__name__)

router = APIRouter(prefix="/smart", tags=["smart"], include_in_schema=False)

def _when(value: datetime | str | None, zone: ZoneInfo) -> str:
    """A time as the clinic reads it: its own time zone, day and minute."""
    if isinstance(value, str):  # a FHIR instant, e.g. Task.authoredOn
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    elif value is None:
        return "—"
    else:
        moment = value
    return moment.astimezone(zone).strftime("%a %d %b %Y, %H:%M %Z")


environment.filters["when"] = _when
# Made to sit in the EHR's frame; forms (staff replies, tasks done) post only back here.
PAGE_HEADERS = page_headers(framed=True, form_action="'self'")

LaunchCookie = Annotated[str | None, Cookie(alias=LAUNCH_COOKIE)]
SessionCookie = Annotated[str | None, Cookie(alias=SESSION_COOKIE)]


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, f"smart/{name}", {**context, "status": status},
                                      status_code=status,
                                      headers=PAGE_HEADERS)


def _error(request: Request, exc: LaunchError) -> HTMLResponse:
    return _page(request, "error.html", exc.status, message=exc.message, hint=exc.hint)


def _box(settings: Settings) -> CookieBox:
    """The cookie box, or a LaunchError (503) when the SMART app is not configured."""
    if settings.smart_client_id is None or settings.smart_session_secret is None or \
            settings.public_url is None or not settings.smart_issuers:
        raise LaunchError("The outreach view is not set up on this server.", 503,
                          hint="IT: set OUTREACH_SMART_CLIENT_ID, OUTREACH_SMART_SESSION_SECRET, "
                               "OUTREACH_PUBLIC_URL and an EHR base URL (see docs/smart.md).")
    return CookieBox(settings.smart_session_secret.get_secret_value())


def _secure(settings: Settings) -> bool:
    return str(settings.public_url).startswith("https://")


def _http(settings: Settings) -> httpx.AsyncClient:
    # No redirects: the endpoints come from the allow-listed EHR and must answer themselves.
    return httpx.AsyncClient(timeout=settings.fhir_timeout_seconds, follow_redirects=False)


async def _start(request: Request, rt: Runtime, iss: str | None, launch: str | None
                 ) -> Response:
    settings = rt.settings
    try:
        box = _box(settings)
        issuer = allowed_issuer(settings, iss)
        async with _http(settings) as client:
            endpoints = await discover(client, issuer)
    except LaunchError as exc:
        log.info("SMART launch refused (%s): %s", exc.status, exc.message)
        return _error(request, exc)
    pending = new_pending_launch(settings, issuer, endpoints)
    response = RedirectResponse(authorize_url(settings, endpoints, pending, launch),
                                status_code=302)
    response.set_cookie(LAUNCH_COOKIE, box.seal_launch(pending), max_age=LAUNCH_TTL_SECONDS,
                        path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(settings))
    log.info("SMART %s launch from %s: sent to authorize", "EHR" if launch else "standalone",
             issuer)
    return response


@router.get("/launch", response_class=HTMLResponse)
async def ehr_launch(request: Request, rt: RuntimeDep, iss: str | None = None,
                     launch: str | None = None) -> Response:
    """The EHR opens this with `iss` (its FHIR base) and an opaque `launch` context id."""
    if not launch or len(launch) > MAX_PARAM_LENGTH:
        return _error(request, LaunchError(
            "The launch did not carry the EHR's context ('launch').",
            hint="Open the app from the patient's chart in the EHR."))
    return await _start(request, rt, iss, launch)


@router.get("/standalone", response_class=HTMLResponse)
async def standalone_launch(request: Request, rt: RuntimeDep, iss: str | None = None
                            ) -> Response:
    """Staff open this directly; the authorization server asks which patient."""
    issuers = rt.settings.smart_issuers
    return await _start(request, rt, iss or (issuers[0] if issuers else None), None)


@router.get("/callback", response_class=HTMLResponse)
async def callback(request: Request, rt: RuntimeDep, pending_cookie: LaunchCookie = None,
                   code: str | None = None, state: str | None = None,
                   error: str | None = None) -> Response:
    settings = rt.settings
    try:
        box = _box(settings)
        pending = box.open_launch(pending_cookie)
        if pending is None:
            raise LaunchError("This sign-in has expired or was started in another browser.",
                              hint="Open the app again from the patient's chart.")
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise LaunchError("This sign-in does not match the one this browser started.",
                              hint="Open the app again from the patient's chart.")
        if error or not code:
            raise LaunchError("The EHR did not authorize the outreach view"
                              + (f" ({error[:40]})." if error else "."),
                              hint="Open the app again, and approve access when asked.")
        assert settings.smart_client_id is not None
        async with _http(settings) as client:
            grant, user = await clinician_grant(client, pending, code,
                                                settings.smart_client_id, datetime.now(UTC))
    except LaunchError as exc:
        log.info("SMART callback refused (%s): %s", exc.status, exc.message)
        return _error(request, exc)
    target = settings.public("/smart/timeline") or "/smart/timeline"
    response = RedirectResponse(target, status_code=303)
    max_age = int((grant.expires_at - datetime.now(UTC)).total_seconds())
    response.set_cookie(SESSION_COOKIE, box.seal_session(grant, pending.iss, user), max_age=max_age,
                        path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(settings))
    response.delete_cookie(LAUNCH_COOKIE, path=COOKIE_PATH)
    log.info("SMART session started for %s from %s", grant.patient, pending.iss)
    return response


def _session(settings: Settings, cookie: str | None) -> SmartSession | None:
    try:
        box = _box(settings)
    except LaunchError:
        return None
    return box.open_session(cookie, datetime.now(UTC))


@router.get("/timeline", response_class=HTMLResponse)
async def timeline(request: Request, rt: RuntimeDep, session_cookie: SessionCookie = None,
                   notice: str | None = None) -> Response:
    """The patient comes from the session only: no id in the URL, nothing to tamper with.
    `notice` names what a staff action just did (a key: anything else is ignored)."""
    session = _session(rt.settings, session_cookie)
    if session is None:
        return _page(request, "error.html", 401, message="No patient is open.",
                     hint="Open the outreach view from the patient's chart in the EHR "
                          "(or sign in again: sessions end with the EHR's token).")
    return await timeline_page(request, rt, session, notice=NOTICES.get(notice or ""),
                               warn=notice not in OK_NOTICES)


async def timeline_page(request: Request, rt: Runtime, session: SmartSession, *,
                        status: int = 200, notice: str | None = None, warn: bool = False,
                        session_token: str | None = None) -> HTMLResponse:
    """The timeline with what the EHR says now, and the staff forms (each with this session's
    CSRF token and a fresh id, so a form sent twice acts once)."""
    view = await timeline_view(rt, session)
    secret = rt.settings.smart_session_secret
    assert secret is not None, "a session was opened with it"
    return _page(request, "timeline.html", status, timeline=view.timeline, ehr=view.ehr,
                 banner=view.banner, zone=rt.settings.zone, now=datetime.now(UTC),
                 today=datetime.now(rt.settings.zone).date(),
                 csrf=csrf_token(secret.get_secret_value(), session),
                 reply_uid=secrets.token_urlsafe(24), notice=notice,
                 notice_warn=warn or status >= 400,
                 sender_note=sender_note(session), session_token=session_token)
