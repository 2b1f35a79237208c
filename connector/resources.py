"""Validate incoming FHIR R4 JSON (fhir.resources R4B models) and the codes we act on."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from connector.errors import InvalidResource
from rules.schema import STATUSES

# fhir.resources does not check code values: the ones journeys depend on are checked here.


def _issue(diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": "invalid", "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return issue


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidResource(f"body is not JSON: {exc}") from exc


def validate_resource(data: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Return the resource unchanged if it is valid R4 of the expected type; else InvalidResource
    whose OperationOutcome names every offending element."""
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise InvalidResource("not a FHIR resource: no resourceType")
    rtype = data["resourceType"]
    if expected_type is not None and rtype != expected_type:
        raise InvalidResource(f"resourceType {rtype!r} does not match the URL ({expected_type})")
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError) as exc:
        raise InvalidResource(f"unknown resourceType {rtype!r}") from exc
    try:
        model.model_validate(data)
    except ValidationError as exc:
        issues = [
            _issue(err["msg"], ".".join([rtype, *(str(p) for p in err["loc"])]))
            for err in exc.errors()
        ]
        raise InvalidResource(f"{rtype} is not valid R4 ({len(issues)} issues)", issues) from exc
    allowed = STATUSES.get(rtype) or None
    if allowed is not None and data.get("status") not in allowed:
        raise InvalidResource(
            f"{rtype}.status {data.get('status')!r} is not an R4 code",
            [_issue(f"status must be one of {sorted(allowed)}", f"{rtype}.status")],
        )
    return data
