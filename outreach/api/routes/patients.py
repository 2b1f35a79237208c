"""The patient preference page at /p/{token}: reached from a signed, expiring link in a message,
no login; mobile-first, in the patient's language, no scripts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from outreach.api.deps import BadForm, RuntimeDep, bounded_form
from outreach.api.pages import PATIENT_PAGE_HEADERS, bad_link_page, patient_page
from outreach.core.links import BadLink, LinkClaims
from outreach.core.ports import Runtime
from outreach.patients import preferences
from outreach.patients.text import LANGUAGE_NAMES, text_for
from outreach.store.preferences import CHANNELS, LANGUAGES
from rules.schema import CONSENT_CATEGORIES

router = APIRouter(prefix="/p", tags=["patients"], include_in_schema=False)

def _bad_link(request: Request, exc: BadLink, language: str = "en") -> HTMLResponse:
    return bad_link_page(request, exc.reason, language)


def _page(request: Request, rt: Runtime, claims: LinkClaims, *, status: int = 200,
          saved: str | None = None, error: str | None = None,
          shown: preferences.Shown | None = None) -> HTMLResponse:
    prefs = shown if shown is not None else preferences.current(rt, claims.patient)
    # Only a language the page speaks: `lang` must name the language of the words shown.
    language = prefs.language if prefs.language in LANGUAGES else preferences.page_language(claims)
    organization = rt.settings.organization_name or text_for(language)["us"]
    return patient_page(request, "preferences.html", language, status, prefs=prefs, saved=saved,
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
        return await run_in_threadpool(_page, request, rt, claims, status=422, error=exc.field,
                                       shown=exc.shown)
    changed = await run_in_threadpool(preferences.update, rt, claims, chosen)
    # Post/redirect/get: a reload does not post again.
    return RedirectResponse(f"/p/{token}?saved={'yes' if changed else 'no'}", status_code=303,
                            headers=PATIENT_PAGE_HEADERS)
