"""The OpenAPI document the route fuzzer works from: the app's own, plus what FastAPI cannot see
(bodies the routes read raw: FHIR notifications and Twilio's forms; the pages kept out of the
published schema: dashboard, preference page, SMART view), each with the grammar the route
enforces, so the fuzzer's valid cases get past validation and its invalid ones probe it."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from outreach.api.routes.dashboard_smart import LAUNCH_COOKIE as STAFF_LAUNCH_COOKIE
from outreach.staff.signin import COOKIE as STAFF_COOKIE
from outreach.staff.smart.session import LAUNCH_COOKIE, SESSION_COOKIE

FIXTURES = Path(__file__).resolve().parents[2] / "fhir_fixtures"
FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
TYPE_PATTERN = "^[A-Z][A-Za-z]{1,63}$"
ID_PATTERN = "^[A-Za-z0-9.-]{1,64}$"
MESSAGE_SID = "^(SM|MM)[0-9a-f]{32}$"
PHONE = r"^\+1555555[0-9]{4}$"
STATUSES = ["queued", "sent", "delivered", "undelivered", "failed", "received", "read"]
OK = {"200": {"description": "ok"}}


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _param(name: str, where: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": _string(**schema)}


def _body(media: str, schema: dict[str, Any], examples: list[Any] | None = None,
          required: bool = True) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if examples:
        content["examples"] = {f"e{i}": {"value": v} for i, v in enumerate(examples)}
    return {"required": required, "content": {media: content}}


def _fixture(path: str) -> Any:
    return json.loads((FIXTURES / path).read_text())


# -- FHIR rest-hook and topic notifications ---------------------------------------------------

_RESOURCE = {
    "type": "object",
    "required": ["resourceType", "id", "status", "participant"],  # what R4 needs of these
    "properties": {
        "resourceType": {"enum": ["Appointment", "Encounter", "Patient"]},
        "id": _string(pattern=ID_PATTERN),
        "meta": {"type": "object", "properties": {"versionId": _string(maxLength=64)}},
        "status": {"enum": ["booked", "cancelled", "fulfilled", "noshow", "arrived",
                            "finished", "proposed", "waitlist"]},
        "start": _string(format="date-time"),
        "participant": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "required": ["status"], "properties": {
                "actor": {"type": "object", "properties": {"reference": _string()}},
                "status": {"enum": ["accepted", "declined", "needs-action"]}}}},
    },
}
_BUNDLE = {
    "type": "object",
    "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"enum": ["history", "transaction", "collection"]},
        "entry": {"type": "array", "maxItems": 4, "items": {
            "type": "object", "properties": {"fullUrl": _string(), "resource": {
                "type": "object", "properties": {
                    "resourceType": {"enum": ["Parameters", "SubscriptionStatus",
                                              "Appointment"]},
                    "parameter": {"type": "array", "maxItems": 6, "items": {
                        "type": "object", "properties": {
                            "name": {"enum": ["subscription", "topic", "status", "type",
                                              "events-since-subscription-start",
                                              "notification-event"]},
                            "valueString": _string(),
                            "valueCode": _string(),
                            "valueReference": {"type": "object",
                                               "properties": {"reference": _string()}}}}}}}}}},
    },
}


def _notify(paths: dict[str, Any]) -> None:
    item = paths["/fhir/notify/{resource_type}/{resource_id}"]
    for operation in item.values():
        for param in operation["parameters"]:
            if param["name"] == "resource_type":
                param["schema"] = _string(pattern=TYPE_PATTERN)
            elif param["name"] == "resource_id":
                param["schema"] = _string(pattern=ID_PATTERN)
    item["put"]["requestBody"] = _body(FHIR_JSON, _RESOURCE, [
        _fixture("demo/10-appointment-ana-v1-booked.json")])
    bundles = [json.loads(p.read_text())
               for p in sorted((FIXTURES / "notifications").glob("*.json"))]
    paths["/fhir/notify"]["post"]["requestBody"] = _body(FHIR_JSON, _BUNDLE, bundles,
                                                         required=False)


# -- Twilio's webhooks --------------------------------------------------------------------------

def _twilio(paths: dict[str, Any], account_sid: str) -> None:
    common = {"MessageSid": _string(pattern=MESSAGE_SID),
              "SmsSid": _string(pattern=MESSAGE_SID),
              "AccountSid": {"const": account_sid},
              "From": _string(pattern=PHONE), "To": _string(pattern=PHONE),
              "ApiVersion": {"const": "2010-04-01"}}
    inbound = {"type": "object", "required": ["MessageSid", "AccountSid", "From", "To", "Body"],
               "properties": {**common, "Body": _string(maxLength=1600),
                              "NumMedia": _string(pattern="^[0-9]{1,4}$"),
                              "NumSegments": _string(pattern="^[0-9]{1,4}$")}}
    status = {"type": "object", "required": ["MessageSid", "AccountSid", "MessageStatus"],
              "properties": {**common, "MessageStatus": {"enum": STATUSES},
                             "ErrorCode": _string(pattern="^[0-9]{1,6}$")}}
    paths["/channels/twilio/inbound"]["post"]["requestBody"] = _body(FORM, inbound)
    paths["/channels/twilio/status"]["post"]["requestBody"] = _body(FORM, status)


# -- the pages FastAPI leaves out of the schema -------------------------------------------------

def _get(*params: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": list(params), "responses": OK}


def _post(body: dict[str, Any] | None = None, *params: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {"parameters": list(params), "responses": OK}
    if body is not None:
        operation["requestBody"] = body
    return operation


def _pages() -> dict[str, Any]:
    staff = _param(STAFF_COOKIE, "cookie", maxLength=500)
    period = [_param("from", "query", maxLength=40), _param("to", "query", maxLength=40)]
    filters = [_param(name, "query", maxLength=200) for name in (
        "journey", "step", "channel", "language", "location", "practitioner", "service_type")]
    token = _param("token", "path", required=True)
    preferences = {"type": "object", "properties": {
        "channel": {"enum": ["any", "sms", "email"]},
        "language": {"enum": ["", "en", "es"]},
        "quiet_from": _string(pattern="^([01][0-9]|2[0-3]):[0-5][0-9]$"),
        "quiet_to": _string(pattern="^([01][0-9]|2[0-3]):[0-5][0-9]$"),
        "receive-appointments": {"const": "yes"}, "receive-surveys": {"const": "yes"},
        "receive-campaigns": {"const": "yes"}}}
    return {
        "/dashboard": {"get": _get(staff, *period, *filters,
                                   _param("by", "query", maxLength=20))},
        "/dashboard/appointments": {"get": _get(staff, *period, *filters,
                                                _param("figure", "query", maxLength=40),
                                                _param("by", "query", maxLength=20))},
        "/dashboard/sign-in": {
            "get": _get(),
            "post": _post(_body(FORM, {"type": "object", "required": ["token"],
                                       "properties": {"token": _string(maxLength=200)}})),
        },
        "/dashboard/sign-out": {"post": _post(None, staff)},
        "/dashboard/sign-in/smart": {"get": _get(_param("iss", "query", format="uri"))},
        "/dashboard/sign-in/smart/callback": {"get": _get(
            _param("code", "query"), _param("state", "query"), _param("error", "query"),
            _param("error_description", "query"), _param(STAFF_LAUNCH_COOKIE, "cookie"))},
        "/p/{token}": {
            "get": _get(token, {"name": "saved", "in": "query", "required": False,
                                "schema": {"enum": ["yes", "no"]}}),
            "post": _post(_body(FORM, preferences), token),
        },
        # The offer page: fuzzed with made-up links only (a valid one needs a held offer).
        "/o/{token}": {
            "get": _get(token, {"name": "after", "in": "query", "required": False,
                                "schema": {"enum": ["taken", "noted"]}}),
            "post": _post(_body(FORM, {"type": "object", "properties": {
                "option": _string(maxLength=4), "answer": _string(maxLength=40),
                "can-come": {"const": "yes"}, "when-mornings": {"const": "yes"}}}), token),
        },
        "/smart/launch": {"get": _get(_param("iss", "query", format="uri"),
                                      _param("launch", "query", maxLength=200))},
        "/smart/standalone": {"get": _get(_param("iss", "query", format="uri"))},
        "/smart/callback": {"get": _get(_param("code", "query"), _param("state", "query"),
                                        _param("error", "query"),
                                        _param("error_description", "query"),
                                        _param("Sec-Fetch-Dest", "header"),
                                        _param(LAUNCH_COOKIE, "cookie"))},
        "/smart/timeline": {"get": _get(_param(SESSION_COOKIE, "cookie"),
                                        _param("session_token", "query"),
                                        _param("X-Outreach-Session-Token", "header"),
                                        _param("notice", "query", maxLength=40))},
        "/smart/jwks": {"get": _get()},
        "/smart/reply": {"post": _post(_body(FORM, {"type": "object", "properties": {
            "csrf": _string(maxLength=100), "session_token": _string(maxLength=100),
            "uid": _string(maxLength=80), "text": _string(maxLength=1200),
            "about": _string(maxLength=200)}}), _param(SESSION_COOKIE, "cookie"))},
        "/smart/tasks/done": {"post": _post(_body(FORM, {"type": "object", "properties": {
            "csrf": _string(maxLength=100), "session_token": _string(maxLength=100),
            "task": _string(maxLength=300)}}), _param(SESSION_COOKIE, "cookie"))},
    }


def fuzz_schema(app: FastAPI, account_sid: str) -> dict[str, Any]:
    """The app's OpenAPI document with every route's input described."""
    schema = copy.deepcopy(app.openapi())
    paths = schema["paths"]
    _notify(paths)
    _twilio(paths, account_sid)
    paths.update(_pages())
    return schema


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI 0.16x keeps those nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _api_routes(nested.routes)


def unfuzzed_routes(app: FastAPI, schema: dict[str, Any]) -> list[str]:
    """`METHOD path` of each route of the app that the schema does not describe."""
    return [f"{method} {route.path}" for route in _api_routes(app.routes)
            for method in sorted(route.methods)
            if method.lower() not in schema["paths"].get(route.path, {})]
