"""Build the FastAPI application."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response

from connector.subscriptions import SECRET_HEADER
from outreach.api import access_log
from outreach.api.deps import outcome_response
from outreach.api.routes import admin, dashboard, health, notify, patients, smart, twilio

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
    app.include_router(patients.router)
    app.include_router(dashboard.router)
    app.include_router(health.router)

    @app.exception_handler(twilio.ForgedWebhook)
    async def _forged(_request: Request, _exc: twilio.ForgedWebhook) -> Response:
        return Response("invalid signature", status_code=403, media_type="text/plain")

    @app.exception_handler(notify.Unauthorized)
    async def _unauthorized(_request: Request, _exc: notify.Unauthorized) -> Response:
        return outcome_response(401, f"missing or wrong {SECRET_HEADER} header",
                                code="login")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return outcome_response(500, f"internal error ({type(exc).__name__}); nothing was lost, "
                                "the sender may retry", code="exception")

    return app
