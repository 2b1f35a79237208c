"""Build the FastAPI application."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import Response

from connector.subscriptions import SECRET_HEADER
from outreach import runtime
from outreach.api import access_log
from outreach.api.admin_gate import AdminGate
from outreach.api.deadlines import BodyTimeout, Deadlines
from outreach.api.deps import outcome_response
from outreach.api.hosts import HostCheck
from outreach.api.limits import BodyLimit, BodyTooLarge, refusal
from outreach.api.routes import (
    admin,
    dashboard,
    dashboard_smart,
    health,
    notify,
    offers,
    patients,
    smart,
    smart_staff,
    twilio,
)
from outreach.staff.signin import caller_for

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    access_log.install()
    app = FastAPI(
        title="fhir-outreach",
        summary="FHIR-native patient outreach: rest-hook receiver, operations endpoints.",
        version="0.1.0",
    )
    app.include_router(notify.router)
    app.include_router(twilio.router)
    app.include_router(admin.router)
    app.include_router(smart.router)
    app.include_router(smart_staff.router)
    app.include_router(patients.router)
    app.include_router(offers.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard_smart.router)
    app.include_router(health.router)
    # No redirect built from the Host header (a trailing slash is a 404, not a 307 elsewhere).
    app.router.redirect_slashes = False
    # Outermost last: deadlines on everything, then the host, the admin token, the body size.
    app.add_middleware(BodyLimit, limit_for=_body_limit)
    app.add_middleware(AdminGate, caller=lambda token: caller_for(
        runtime.current().settings, token))
    app.add_middleware(HostCheck, allowed=lambda: runtime.current().settings.trusted_hosts)
    app.add_middleware(Deadlines, limits=_deadlines)

    @app.exception_handler(twilio.ForgedWebhook)
    async def _forged(_request: Request, _exc: twilio.ForgedWebhook) -> Response:
        return Response("invalid signature", status_code=403, media_type="text/plain")

    @app.exception_handler(notify.Unauthorized)
    async def _unauthorized(_request: Request, _exc: notify.Unauthorized) -> Response:
        return outcome_response(401, f"missing or wrong {SECRET_HEADER} header",
                                code="login")

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, exc: BodyTooLarge) -> Response:
        return refusal(exc)

    @app.exception_handler(BodyTimeout)
    async def _too_slow(request: Request, exc: BodyTimeout) -> Response:
        headers = {"Connection": "close"}  # the rest of the body is not read
        if request.url.path.startswith("/fhir/"):  # FHIR callers get an OperationOutcome
            response = outcome_response(408, exc.detail, code="timeout")
            response.headers.update(headers)
            return response
        return Response(exc.detail + "\n", status_code=408, media_type="text/plain",
                        headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # The caller gets a reference to quote, not our internals; the log has the rest.
        reference = uuid.uuid4().hex[:12]
        log.error("unhandled error %s on %s %s", reference, request.method,
                  access_log.masked(request.url.path), exc_info=exc)
        return outcome_response(500, f"internal error (reference {reference}); nothing was "
                                "lost, the sender may retry", code="exception")

    return app


def _deadlines() -> tuple[float, float]:
    settings = runtime.current().settings
    return settings.body_timeout_seconds, settings.request_timeout_seconds


def _body_limit(path: str) -> int:
    settings = runtime.current().settings
    return settings.max_notification_bytes if path.startswith("/fhir/notify") \
        else settings.max_request_bytes
