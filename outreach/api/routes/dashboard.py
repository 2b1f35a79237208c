"""The managers' dashboard at /dashboard: outcomes for a period, trends, a breakdown, open
service-recovery Tasks and the appointments behind a number (ids only). Staff sign in with an
admin token or at the EHR (routes.dashboard_smart); server-rendered, no scripts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Cookie, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from outreach.api.deps import BadForm, RuntimeDep, bounded_form
from outreach.api.pages import page_headers, templates
from outreach.api.routes.dashboard_smart import ehr_choices
from outreach.core.ports import Runtime
from outreach.reports.facts import AppointmentFacts
from outreach.reports.outcomes import DIMENSIONS, HEADLINE, Period, UnknownFilter, show
from outreach.reports.service import (
    BadPeriod,
    Dashboard,
    appointments_behind,
    dashboard,
    period,
)
from outreach.staff.signin import COOKIE, COOKIE_PATH, SESSION, caller_for, seal, signed_in

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

PAGE_HEADERS = page_headers(form_action="'self'", images="data:")
StaffCookie = Annotated[str | None, Cookie(alias=COOKIE)]
DEFAULT_DAYS = 28
Filter = Annotated[str | None, Query(max_length=200)]
T = TypeVar("T")


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, f"dashboard/{name}",
                                      {**context, "show": show, "status": status},
                                      status_code=status, headers=PAGE_HEADERS)


def _caller(request: Request, rt: Runtime, cookie: str | None) -> str | None:
    header = request.headers.get("authorization", "")
    bearer = header[7:] if header.lower().startswith("bearer ") else None
    return caller_for(rt.settings, bearer) or signed_in(rt.settings, cookie, datetime.now(UTC))


def _day(value: str | None, name: str) -> date | None:
    # Parsed here, not by FastAPI: a cleared date field arrives as "from=", and a bad date must
    # get the page with its message, not a JSON 422.
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadPeriod(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None


def _period(rt: Runtime, first: str | None, last: str | None) -> Period:
    end = _day(last, "to") or rt.clock.now().astimezone(rt.settings.zone).date()
    start = _day(first, "from")
    if start is None:
        period(end, end)  # refuses a day out of range before the subtraction overflows
        start = end - timedelta(days=DEFAULT_DAYS - 1)
    return period(start, end)


def _filters(journey: Filter = None, step: Filter = None, channel: Filter = None,
             language: Filter = None, location: Filter = None, practitioner: Filter = None,
             service_type: Filter = None) -> dict[str, str]:
    """The report's filters (outreach.reports.outcomes.DIMENSIONS) from the query string."""
    given = {"journey": journey, "step": step, "channel": channel, "language": language,
             "location": location, "practitioner": practitioner, "service_type": service_type}
    return {name: value for name, value in given.items() if value}


Filters = Annotated[dict[str, str], Depends(_filters)]


def _query(chosen: Period, filters: dict[str, str], **extra: str) -> str:
    return urlencode({"from": chosen.first.isoformat(), "to": chosen.last.isoformat(),
                      **filters, **extra})


@dataclass(frozen=True, slots=True)
class _Asked:
    """What every dashboard page is asked for: who (None: not signed in), the period as typed,
    and the filters."""

    caller: str | None
    first: str | None
    last: str | None
    filters: dict[str, str]


def _asked(
    request: Request, rt: RuntimeDep, filters: Filters, cookie: StaffCookie = None,
    first: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    last: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> _Asked:
    return _Asked(_caller(request, rt, cookie), first, last, filters)


Asked = Annotated[_Asked, Depends(_asked)]


async def _view(request: Request, rt: Runtime, asked: _Asked, load: Callable[[Period], T],
                render: Callable[[Period, T], HTMLResponse]) -> Response:
    """Sign-in first; then the period and the data for it, or the page saying what was wrong."""
    if asked.caller is None:
        return RedirectResponse("/dashboard/sign-in", status_code=303)
    try:
        chosen = _period(rt, asked.first, asked.last)
        data = await run_in_threadpool(load, chosen)
    except (BadPeriod, UnknownFilter) as exc:
        return _page(request, "problem.html", 400, caller=asked.caller, message=str(exc))
    return render(chosen, data)


@router.get("", response_class=HTMLResponse)
async def home(request: Request, rt: RuntimeDep, asked: Asked,
               by: Annotated[str, Query(max_length=20)] = "journey") -> Response:
    filters = asked.filters

    def render(chosen: Period, view: Dashboard) -> HTMLResponse:
        return _page(request, "index.html", caller=asked.caller, view=view, period=chosen,
                     filters=filters, dimensions=DIMENSIONS, headline=HEADLINE,
                     zone=rt.settings.zone,
                     query=lambda **extra: _query(chosen, filters, by=view.dimension, **extra))

    return await _view(request, rt, asked,
                       lambda chosen: dashboard(rt, chosen, filters, by), render)


@router.get("/appointments", response_class=HTMLResponse)
async def behind(request: Request, rt: RuntimeDep, asked: Asked,
                 figure: Annotated[str, Query(max_length=40)] = "appointments",
                 by: Annotated[str, Query(max_length=20)] = "journey") -> Response:
    """The appointments behind one number of the dashboard (`by` only for the way back)."""
    filters = asked.filters

    def render(chosen: Period, rows: list[AppointmentFacts]) -> HTMLResponse:
        return _page(request, "appointments.html", caller=asked.caller, rows=rows,
                     figure=figure, period=chosen, filters=filters, zone=rt.settings.zone,
                     back=_query(chosen, filters, by=by))

    return await _view(request, rt, asked,
                       lambda chosen: appointments_behind(rt, chosen, filters, figure), render)


def _sign_in_page(request: Request, rt: Runtime, status: int = 200,
                  error: str | None = None) -> HTMLResponse:
    """The token form and a "Sign in with <EHR>" link per EHR staff may sign in at."""
    return _page(request, "sign_in.html", status, error=error,
                 ehrs=ehr_choices(rt.settings), tokens=rt.settings.admin_tokens is not None)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, rt: RuntimeDep) -> Response:
    return _sign_in_page(request, rt)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, rt: RuntimeDep) -> Response:
    try:
        form = await bounded_form(request, limit=4096)
    except BadForm as exc:
        return _sign_in_page(request, rt, exc.status, "The form could not be read.")
    caller = caller_for(rt.settings, form.get("token", "").strip())
    if caller is None:
        return _sign_in_page(request, rt, 401, "That token is not valid.")
    response = RedirectResponse("/dashboard", status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(COOKIE, seal(rt.settings, caller, datetime.now(UTC)),
                        max_age=int(SESSION.total_seconds()), path=COOKIE_PATH, httponly=True,
                        samesite="strict",
                        secure=str(rt.settings.public_url or "").startswith("https://"))
    return response


@router.post("/sign-out")
async def sign_out() -> Response:
    response = RedirectResponse("/dashboard/sign-in", status_code=303, headers=PAGE_HEADERS)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response
