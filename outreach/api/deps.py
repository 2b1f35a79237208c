"""Shared FastAPI dependencies and FHIR-shaped error responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
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
