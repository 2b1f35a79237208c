"""What every server-rendered page shares: one template environment (everything escaped: names,
replies and Task texts come from patients and staff) and the security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

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
