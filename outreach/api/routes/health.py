"""Liveness/readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from outreach.api.deps import RuntimeDep
from outreach.core.metrics import exposition
from outreach.store.migrate import SchemaOutOfDate, require_current

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(rt: RuntimeDep) -> JSONResponse:
    try:
        await run_in_threadpool(require_current, rt.engine)
    except (SQLAlchemyError, SchemaOutOfDate) as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)[:300]}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
