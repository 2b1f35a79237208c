"""Liveness/readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from outreach.api.deps import RuntimeDep
from outreach.core.metrics import exposition
from outreach.staff.signin import caller_for
from outreach.store.migrate import SchemaOutOfDate, require_current

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(request: Request, rt: RuntimeDep) -> JSONResponse:
    """ok or unavailable for anyone (a load balancer); why, only for an admin token: the
    database's host and name are nobody else's business."""
    try:
        await run_in_threadpool(require_current, rt.engine)
    except (SQLAlchemyError, SchemaOutOfDate) as exc:
        header = request.headers.get("authorization", "")
        staff = caller_for(rt.settings, header[7:] if header.lower().startswith("bearer ")
                           else None)
        body = {"status": "unavailable"}
        if staff is not None:
            body["detail"] = str(exc)[:300]
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
