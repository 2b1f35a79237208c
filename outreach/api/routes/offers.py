"""The offer page at /o/{token}: the times held for a patient (a new time for their appointment,
or a freed time for the waitlist), reached from the signed link in the SMS, no login; a choice
books, as a number or YES by text would, and the patient may say when they can come instead."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from outreach.access import page
from outreach.access.availability import PAGE_CHOICES
from outreach.access.outcome import OfferReply
from outreach.api.deps import BadForm, RuntimeDep, bounded_form
from outreach.api.pages import PATIENT_PAGE_HEADERS, bad_link_page, patient_page
from outreach.core.links import BadLink, LinkClaims
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest

router = APIRouter(prefix="/o", tags=["patients"], include_in_schema=False)

# The page a link's problem shows: an offer's own words for an expired one.
_LINK_PROBLEM = {"expired": "offer_gone"}
# Why the patient was sent on to a new offer's page (a notice on it); nothing else is read.
After = Literal["taken", "noted"]
_CAN_COME = "can-come"  # the button that says when the patient can come instead
Error = Literal["pick", "can_come"]


def _bad_link(request: Request, exc: BadLink) -> HTMLResponse:
    return bad_link_page(request, exc.reason, exc.language or "en",
                         _LINK_PROBLEM.get(exc.reason))


def _show(request: Request, rt: Runtime, claims: LinkClaims, *, status: int = 200,
          message: str | None = None, error: Error | None = None,
          after: After | None = None) -> HTMLResponse:
    offer = page.view(rt, claims)
    if offer is None:
        return _bad_link(request, BadLink("invalid", claims.language))
    return patient_page(request, "offer.html", offer.language, status, offer=offer,
                   until=offer.holds_until, message=message, error=error, after=after)


def _see(path: str, after: After | None = None) -> RedirectResponse:
    """Post/redirect/get: a reload shows what happened and books nothing again."""
    return RedirectResponse(f"{path}?after={after}" if after else path, status_code=303,
                            headers=PATIENT_PAGE_HEADERS)


def _answer(request: Request, rt: Runtime, claims: LinkClaims, form: dict[str, str],
            token: str) -> Response:
    before = page.view(rt, claims)
    if before is None:
        return _bad_link(request, BadLink("invalid", claims.language))
    if before.state != "open":  # answered already (a reload, a second tap) or over
        return _see(f"/o/{token}")
    can_come = _CAN_COME in form
    result: OfferReply | None
    if can_come:
        result = page.restate(rt, claims, [name for name in PAGE_CHOICES
                                           if form.get(f"when-{name}") == "yes"])
    else:
        result = page.answer(rt, claims, form.get("option") or form.get("answer") or "")
    if result is None:
        return _bad_link(request, BadLink("invalid", claims.language))
    if result.answer is None:
        return _show(request, rt, claims, status=422, error="can_come" if can_come else "pick")
    if result.changed is not None:  # the reminders follow the new time
        ingest(rt, result.changed, source="offer-page")
    if result.next_offer is not None:
        path = page.path_of(rt, result.next_offer)
        if path is not None:
            return _see(path, "noted" if can_come else "taken")
    after = page.view(rt, claims)
    if after is not None and after.state in ("booked", "declined"):
        return _see(f"/o/{token}")
    return _show(request, rt, claims, message=result.answer)


@router.get("/{token}", response_class=HTMLResponse)
async def show(token: str, request: Request, rt: RuntimeDep,
               after: str | None = None) -> Response:
    try:
        claims = page.open_link(rt, token)
    except BadLink as exc:
        return _bad_link(request, exc)
    said: After | None = "taken" if after == "taken" else "noted" if after == "noted" else None
    return await run_in_threadpool(_show, request, rt, claims, after=said)


@router.post("/{token}", response_class=HTMLResponse)
async def choose(token: str, request: Request, rt: RuntimeDep) -> Response:
    try:
        claims = page.open_link(rt, token)
    except BadLink as exc:
        return _bad_link(request, exc)
    try:
        form = await bounded_form(request)
    except BadForm as exc:
        return await run_in_threadpool(_show, request, rt, claims, status=exc.status,
                                       error="pick")
    return await run_in_threadpool(_answer, request, rt, claims, form, token)
