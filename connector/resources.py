"""Validate incoming FHIR R4 JSON (fhir.resources R4B models) and the codes we act on."""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
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


MAX_DEPTH = 64  # no FHIR resource we act on nests anywhere near this deep
# A JSON string, escapes included (unterminated, it runs to the end: each character is looked at
# once, whatever the input); what is left outside strings, less all but brackets, is the nesting.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
# The escape \u0000 (after an even number of backslashes): a NUL in a string, which FHIR does
# not allow and Postgres cannot store in a JSON document.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _depth(text: str) -> int:
    """The deepest nesting of objects and arrays, measured without recursion (regular
    expressions and a running sum, all in C): a body nested 100,000 deep costs one scan."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    return max(accumulate(array("b", brackets.translate(_STEPS))), default=0)


def parse_json(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """A UTF-8 JSON document; InvalidResource (→ 400) for anything else, including a document
    nested deeper than `max_depth`, which the standard parser would only refuse by exhausting
    the stack."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidResource(f"body is not JSON: not UTF-8 ({exc.reason})") from exc
    if _depth(text) > max_depth:
        raise InvalidResource(f"the JSON document is nested too deeply (more than {max_depth} "
                              "levels of objects and arrays)")
    if _NUL_ESCAPE.search(text):
        raise InvalidResource("a JSON string holds a NUL character (\\u0000)")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an oversized integer
        raise InvalidResource(f"body is not JSON: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
    except (TypeError, KeyError, AttributeError) as exc:
        # fhir.resources crashes instead of reporting on some nested resources (an entry or a
        # contained resource whose resourceType is null or names no type): invalid all the same.
        raise InvalidResource(f"{rtype} is not valid R4 (a nested resource has no valid "
                              "resourceType)") from exc
    allowed = STATUSES.get(rtype) or None
    if allowed is not None and data.get("status") not in allowed:
        raise InvalidResource(
            f"{rtype}.status {data.get('status')!r} is not an R4 code",
            [_issue(f"status must be one of {sorted(allowed)}", f"{rtype}.status")],
        )
    return data
