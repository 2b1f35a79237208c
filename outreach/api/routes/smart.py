"""The SMART on FHIR clinician view: EHR and standalone launch, callback, the patient's timeline.

It is made to sit in an EHR's frame, on another site than the EHR: over https its cookies are
`SameSite=None; Secure; Partitioned`, and where the browser sends none at all (third-party
cookies blocked) the launch travels in `state` and the session in a page token (`session_token`)
that the page's links and forms carry (outreach.staff.smart.session)."""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Cookie, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from outreach import runtime
from outreach.api.deps import RuntimeDep
from outreach.api.pages import environment, page_headers, templates
from outreach.core.ports import Runtime
from outreach.core.settings import Settings
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
from outreach.staff.smart.client_auth import public_keys
from outreach.staff.smart.clinician import clinician_grant
from outreach.staff.smart.launch import MAX_PARAM_LENGTH, refusal
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
# Made to sit in the EHR's frame; forms (staff replies, tasks done) post only back here. The
# frame-ancestors allow-list is per deployment: `smart_headers` adds it.
PAGE_HEADERS = page_headers(framed=True, form_action="'self'")
CALLBACK = "/smart/callback"
# Where a page token comes from when the caller does not hand one over (a form field).
SESSION_TOKEN = "session_token"
SESSION_TOKEN_HEADER = "X-Outreach-Session-Token"
MAX_PAGE_TOKEN = 16_384  # a sealed session with an EHR's (JWT) access token in it

LaunchCookie = Annotated[str | None, Cookie(alias=LAUNCH_COOKIE)]


def smart_headers(settings: Settings) -> dict[str, str]:
    """PAGE_HEADERS, with framing allowed to the configured EHR origins only."""
    ancestors = " ".join(settings.smart_ancestors)
    if not ancestors:
        return PAGE_HEADERS
    policy = f"{PAGE_HEADERS['Content-Security-Policy']}; frame-ancestors {ancestors}"
    return {**PAGE_HEADERS, "Content-Security-Policy": policy}


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, f"smart/{name}", {**context, "status": status},
                                      status_code=status,
                                      headers=smart_headers(runtime.current().settings))


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


def _set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int
                ) -> None:
    """Over https, a cookie the EHR's cross-site frame still gets: SameSite=None, and
    Partitioned (CHIPS) so browsers that block third-party cookies keep it for this EHR's
    frame only. Over plain http (development) Lax, the only SameSite a browser takes there."""
    secure = _secure(settings)
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="none" if secure else "lax", secure=secure)
    if secure:  # Starlette writes the attribute only on Python 3.14 (http.cookies)
        key, header = response.raw_headers[-1]
        assert key == b"set-cookie"
        response.raw_headers[-1] = (key, header + b"; Partitioned")


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
        client_auth(settings).check(endpoints)
    except LaunchError as exc:
        log.info("SMART launch refused (%s): %s", exc.status, exc.message)
        return _error(request, exc)
    pending = new_pending_launch(settings, issuer, endpoints, callback=CALLBACK)
    # The state is the sealed launch, so the callback can go on without the cookie.
    pending = replace(pending, state=box.seal_state(pending.verifier, issuer))
    response = RedirectResponse(authorize_url(settings, endpoints, pending, launch),
                                status_code=302, headers=smart_headers(settings))
    _set_cookie(response, settings, LAUNCH_COOKIE, box.seal_launch(pending), LAUNCH_TTL_SECONDS)
    log.info("SMART %s launch from %s (%s client, SMART %s scopes): sent to authorize",
             "EHR" if launch else "standalone", issuer, settings.smart_client_auth,
             "v2" if endpoints.v2 else "v1")
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


def _in_a_frame(request: Request) -> bool:
    """The browser says this navigation is in a frame. Only then may a launch finish without
    its cookie: frame-ancestors lets only the EHRs show our pages in a frame, so a callback
    URL sent to someone else (to sign them in as another patient's viewer) opens nothing."""
    return request.headers.get("sec-fetch-dest") == "iframe"


async def _pending(request: Request, settings: Settings, box: CookieBox, cookie: str | None,
                   state: str | None) -> tuple[PendingLaunch, bool]:
    """The launch this callback finishes, and whether it came without its cookie."""
    pending = box.open_launch(cookie)
    if pending is not None:
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise LaunchError("This sign-in does not match the one this browser started.",
                              hint="Open the app again from the patient's chart.")
        return pending, False
    opened = box.open_state(state) if state and len(state) <= MAX_PARAM_LENGTH else None
    if opened is None or not settings.smart_cookieless or not _in_a_frame(request):
        raise LaunchError("This sign-in has expired or was started in another browser.",
                          hint="Open the app again from the patient's chart.")
    verifier, iss = opened
    assert state is not None, "it opened"
    issuer = allowed_issuer(settings, iss)  # still allowed, ten minutes on
    async with _http(settings) as client:
        endpoints = await discover(client, issuer)
    return replace(new_pending_launch(settings, issuer, endpoints, callback=CALLBACK),
                   state=state, verifier=verifier), True


@router.get("/callback", response_class=HTMLResponse)
async def callback(request: Request, rt: RuntimeDep, pending_cookie: LaunchCookie = None,
                   code: str | None = None, state: str | None = None,
                   error: str | None = None, error_description: str | None = None) -> Response:
    settings = rt.settings
    try:
        box = _box(settings)
        pending, cookieless = await _pending(request, settings, box, pending_cookie, state)
        if error or not code:
            raise LaunchError("The EHR did not authorize the outreach view"
                              + (f" ({refusal(error, error_description)})." if error else "."),
                              hint="Open the app again, and approve access when asked.")
        if len(code) > MAX_PARAM_LENGTH:
            raise LaunchError("The EHR sent back a malformed authorization code.")
        assert settings.smart_client_id is not None, "_box checked it"
        async with _http(settings) as client:
            grant, user = await clinician_grant(client, pending, code, client_auth(settings),
                                                settings.smart_client_id, datetime.now(UTC))
    except LaunchError as exc:
        log.info("SMART callback refused (%s): %s", exc.status, exc.message)
        return _error(request, exc)
    session = SmartSession(grant.patient, pending.iss, grant.access_token, grant.expires_at,
                           grant.need_patient_banner, user)
    target = settings.public("/smart/timeline") or "/smart/timeline"
    if cookieless:  # the page token stands in for the cookie this frame does not keep
        target = str(httpx.URL(target, params={SESSION_TOKEN: box.seal_page(session)}))
    response = RedirectResponse(target, status_code=303, headers=smart_headers(settings))
    if not cookieless:
        max_age = int((grant.expires_at - datetime.now(UTC)).total_seconds())
        _set_cookie(response, settings, SESSION_COOKIE, box.seal_session(session),
                    max_age)
        _set_cookie(response, settings, LAUNCH_COOKIE, "", 0)  # single use
    log.info("SMART session started for %s from %s%s", grant.patient, pending.iss,
             " (no cookies in this frame: page token)" if cookieless else "")
    return response


def _cookie_may_act(request: Request, settings: Settings) -> bool:
    """Whether the session cookie may stand for the user on this request. Over https it is
    SameSite=None (the EHR's frame needs it), so a browser sends it with any site's form post
    too: a request that changes something must come from our own pages (Sec-Fetch-Site, else
    Origin); a page token in the form needs no such check, no other site can know it."""
    if request.method in ("GET", "HEAD"):
        return True
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin, public = request.headers.get("origin"), httpx.URL(str(settings.public_url))
    return origin is None or origin == f"{public.scheme}://{public.netloc.decode()}"


def current_session(request: Request, settings: Settings, token: str | None = None
                    ) -> SmartSession | None:
    """The open SMART session: from a page token (`token`, e.g. a form's `session_token`
    field; else the `session_token` query parameter or the X-Outreach-Session-Token header),
    which names the patient of the page the request came from, else from the session cookie
    (for a request that changes something, only when it comes from our own pages)."""
    try:
        box = _box(settings)
    except LaunchError:
        return None
    now = datetime.now(UTC)
    token = token or request.query_params.get(SESSION_TOKEN) or \
        request.headers.get(SESSION_TOKEN_HEADER)
    if token and len(token) <= MAX_PAGE_TOKEN:
        session = box.open_page(token, now)
        if session is not None:
            return session
    if not _cookie_may_act(request, settings):
        return None
    return box.open_session(request.cookies.get(SESSION_COOKIE), now)


def page_token(request: Request, settings: Settings, session: SmartSession) -> str:
    """What a page's links and forms carry as `session_token`: "" when the request's session
    cookie holds this very session (cookies work here), else a fresh page token."""
    box = _box(settings)
    cookie = box.open_session(request.cookies.get(SESSION_COOKIE), datetime.now(UTC))
    return "" if cookie == session else box.seal_page(session)


@router.get("/jwks", include_in_schema=False)
async def jwks(rt: RuntimeDep) -> Response:
    """The app's public key (private_key_jwt): the JWK Set URL to register with the EHR."""
    keys = public_keys(rt.settings)
    if keys is None:
        return JSONResponse({"error": "this app does not sign its token requests"}, 404)
    return JSONResponse(keys, headers={"Cache-Control": "max-age=300"})


@router.get("/timeline", response_class=HTMLResponse)
async def timeline(request: Request, rt: RuntimeDep, session_token: str | None = None,
                   notice: str | None = None) -> Response:
    """The patient comes from the session only (cookie or page token): no id in the URL.
    `notice` names what a staff action just did (a key: anything else is ignored)."""
    session = current_session(request, rt.settings, session_token)
    if session is None:
        return _page(request, "error.html", 401, message="No patient is open.",
                     hint="Open the outreach view from the patient's chart in the EHR "
                          "(or sign in again: sessions end with the EHR's token).")
    return await timeline_page(request, rt, session, notice=NOTICES.get(notice or ""),
                               warn=notice not in OK_NOTICES,
                               session_token=page_token(request, rt.settings, session))


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
