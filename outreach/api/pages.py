"""What every server-rendered page shares: one template environment (everything escaped: names,
replies and Task texts come from patients and staff) and the security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from outreach.patients.text import text_for

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
environment = Environment(loader=FileSystemLoader(TEMPLATES_DIR),
                          autoescape=select_autoescape(default=True))
templates = Jinja2Templates(env=environment)


def page_headers(*, form_action: str = "'none'", images: str = "'none'",
                 framed: bool = False) -> dict[str, str]:
    """Pages carry patient or staff data: never cached, never leaking the URL as a referrer,
    no scripts at all; forms post only where `form_action` says. Only a page made to sit in an
    EHR's frame (`framed`, the SMART view) may be framed."""
    policy = (f"default-src 'none'; style-src 'unsafe-inline'; img-src {images}; "
              f"base-uri 'none'; form-action {form_action}")
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
               "X-Content-Type-Options": "nosniff"}
    if not framed:
        policy += "; frame-ancestors 'none'"
        headers["X-Frame-Options"] = "DENY"
    return {**headers, "Content-Security-Policy": policy}


# A patient link's token is the patient's key (no-referrer matters); forms post only back here.
PATIENT_PAGE_HEADERS = page_headers(form_action="'self'")
LINK_STATUS = {"expired": 410, "invalid": 404, "off": 404}


def patient_page(request: Request, name: str, language: str, status: int,
                 **context: Any) -> HTMLResponse:
    """A patient page (`patients/{name}`) in the patient's language."""
    return templates.TemplateResponse(
        request, f"patients/{name}", {**context, "lang": language, "t": text_for(language)},
        status_code=status, headers=PATIENT_PAGE_HEADERS)


def bad_link_page(request: Request, reason: str, language: str = "en",
                  problem: str | None = None) -> HTMLResponse:
    """Why a link opens nothing (`expired` 410, `invalid` or `off` 404), in its words."""
    return patient_page(request, "problem.html", language, LINK_STATUS.get(reason, 404),
                        problem=problem or reason)
