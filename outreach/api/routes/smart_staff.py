"""Staff actions in the SMART clinician view: answer the patient, mark a Task done. Form posts
from the timeline page, each checked against the session's CSRF token, each audited."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from outreach.api.deps import BadForm, RuntimeDep, bounded_form
from outreach.api.routes.smart import (
    SESSION_TOKEN,
    _page,
    current_session,
    page_token,
    timeline_page,
)
from outreach.staff.smart.session import SmartSession
from outreach.staff.smart.staff_actions import (
    BadAction,
    Outcome,
    complete_task,
    csrf_ok,
    send_reply,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/smart", tags=["smart"], include_in_schema=False)

MAX_FORM_BYTES = 8_192  # a reply of 1,000 characters, url-encoded, and a few hidden fields


def _no_session(request: Request) -> HTMLResponse:
    return _page(request, "error.html", 401, message="No patient is open.",
                 hint="Open the outreach view from the patient's chart in the EHR again; "
                      "nothing was sent.")


async def _act(request: Request, rt: RuntimeDep,
               action: Callable[[SmartSession, dict[str, str]], Outcome]) -> Response:
    try:
        form = await bounded_form(request, MAX_FORM_BYTES)
    except BadForm as exc:
        return _page(request, "error.html", exc.status, message=str(exc),
                     hint="Reload the page and try again.")
    token = form.get(SESSION_TOKEN) or None
    session = current_session(request, rt.settings, token)
    if session is None:
        return _no_session(request)
    secret = rt.settings.smart_session_secret
    if secret is None or not csrf_ok(secret.get_secret_value(), session, form.get("csrf")):
        log.info("clinician view: a staff form without this session's CSRF token refused")
        return _page(request, "error.html", 403, message="This form did not come from your "
                     "outreach page.", hint="Reload the page and try again; nothing was done.")
    try:
        outcome = await run_in_threadpool(action, session, form)
    except BadAction as exc:  # nothing was done: the page again, saying why
        return await timeline_page(request, rt, session, status=400, notice=str(exc),
                                   session_token=page_token(request, rt.settings, session))
    # Post/redirect/get: a reload shows the page, it does not send the form again. A
    # cookie-less session goes on in a fresh page token (scrubbed from the access log).
    target = httpx.URL(rt.settings.public("/smart/timeline") or "/smart/timeline")
    params = {"notice": outcome.state}
    fresh = page_token(request, rt.settings, session) if token is not None else ""
    if fresh:
        params[SESSION_TOKEN] = fresh
    return RedirectResponse(str(target.copy_merge_params(params)), status_code=303)


@router.post("/reply", response_class=HTMLResponse)
async def reply(request: Request, rt: RuntimeDep) -> Response:
    """Send the patient a message by SMS, recorded and written back naming the sender."""
    return await _act(request, rt, lambda session, form: send_reply(
        rt, session, form.get("uid", ""), form.get("text", ""), form.get("about") or None))


@router.post("/tasks/done", response_class=HTMLResponse)
async def task_done(request: Request, rt: RuntimeDep) -> Response:
    """Mark one of the open patient's Tasks completed, here and in the EHR."""
    return await _act(request, rt, lambda session, form: complete_task(
        rt, session, form.get("task", "")))
