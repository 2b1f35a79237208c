"""Shared FastAPI dependencies and FHIR-shaped error responses."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from connector.client import FHIR_JSON
from connector.errors import operation_outcome
from outreach import runtime
from outreach.core.ports import Runtime


def get_runtime() -> Runtime:
    return runtime.current()


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


def outcome_response(
    status: int, diagnostics: str, *, code: str = "invalid", severity: str = "error",
    outcome: dict[str, Any] | None = None,
) -> FhirJSONResponse:
    body = outcome or operation_outcome(diagnostics, code=code, severity=severity)
    return FhirJSONResponse(body, status_code=status)


MAX_FORM_BYTES = 16_384  # a form a person fills in; anything larger is not one of ours
MAX_FORM_FIELDS = 50


class BadForm(Exception):
    """A form body too large, not url-encoded, or not UTF-8; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def bounded_form(request: Request, limit: int = MAX_FORM_BYTES,
                       max_fields: int = MAX_FORM_FIELDS) -> dict[str, str]:
    """An url-encoded form read with a size and field-count limit (Starlette reads any size),
    strictly: UTF-8, each field name once."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadForm(415, "send the form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadForm(413, f"form larger than {limit} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm(400, f"the form is not UTF-8 url-encoding of at most {max_fields} "
                      "fields") from exc
    form = dict(pairs)
    if len(form) != len(pairs):
        raise BadForm(400, "a field appears more than once")
    return form
