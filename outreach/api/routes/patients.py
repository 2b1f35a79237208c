"""The patient preference page at /p/{token}: reached from a signed, expiring link in a message,
no login; mobile-first, in the patient's language, no scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from outreach.api.deps import BadForm, RuntimeDep, bounded_form
from outreach.core.links import BadLink, LinkClaims
from outreach.core.ports import Runtime
from outreach.patients import preferences
from outreach.patients.text import LANGUAGE_NAMES, text_for
from outreach.store.preferences import CHANNELS
from rules.schema import CONSENT_CATEGORIES

router = APIRouter(prefix="/p", tags=["patients"], include_in_schema=False)

_env = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
                   autoescape=select_autoescape(default=True))
templates = Jinja2Templates(env=_env)

# The token in the URL is the patient's key: never cached, never sent on as a referrer, never
# framed; no scripts; the form posts only back here.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
}
_LINK_STATUS = {"expired": 410, "invalid": 404, "off": 404}


def _render(request: Request, name: str, language: str, status: int,
            **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, f"patients/{name}",
        {**context, "lang": language, "t": text_for(language)},
        status_code=status, headers=PAGE_HEADERS)


def _bad_link(request: Request, exc: BadLink, language: str = "en") -> HTMLResponse:
    return _render(request, "problem.html", language, _LINK_STATUS.get(exc.reason, 404),
                   problem=exc.reason)


def _page(request: Request, rt: Runtime, claims: LinkClaims, *, status: int = 200,
          saved: str | None = None, error: str | None = None) -> HTMLResponse:
    prefs = preferences.current(rt, claims.patient)
    language = prefs.language or claims.language
    organization = rt.settings.organization_name or text_for(language)["us"]
    return _render(request, "preferences.html", language, status, prefs=prefs, saved=saved,
                   error=error, organization=organization, categories=CONSENT_CATEGORIES,
                   channels=CHANNELS, languages=LANGUAGE_NAMES,
                   expires=claims.expires.date().isoformat())


@router.get("/{token}", response_class=HTMLResponse)
async def show(token: str, request: Request, rt: RuntimeDep,
               saved: str | None = None) -> Response:
    try:
        claims = preferences.open_link(rt, token)
    except BadLink as exc:
        return _bad_link(request, exc)
    return await run_in_threadpool(_page, request, rt, claims,
                                   saved=saved if saved in ("yes", "no") else None)


@router.post("/{token}", response_class=HTMLResponse)
async def save(token: str, request: Request, rt: RuntimeDep) -> Response:
    try:
        claims = preferences.open_link(rt, token)
    except BadLink as exc:
        return _bad_link(request, exc)
    try:
        form = await bounded_form(request)
        chosen = preferences.from_form(form)
    except BadForm as exc:
        return await run_in_threadpool(_page, request, rt, claims, status=exc.status,
                                       error="form")
    except preferences.FormError as exc:
        return await run_in_threadpool(_page, request, rt, claims, status=422, error=exc.field)
    changed = await run_in_threadpool(preferences.update, rt, claims, chosen)
    # Post/redirect/get: a reload does not post again.
    return RedirectResponse(f"/p/{token}?saved={'yes' if changed else 'no'}", status_code=303,
                            headers=PAGE_HEADERS)
