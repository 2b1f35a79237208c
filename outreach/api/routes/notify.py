"""The R4 rest-hook receiver: PUT/DELETE {endpoint}/{Type}/{id} and the empty POST ping."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from connector.errors import InvalidResource
from connector.resources import parse_json, validate_resource
from connector.subscriptions import SECRET_HEADER
from outreach.api.deps import FhirJSONResponse, RuntimeDep, outcome_response
from outreach.ingest import IngestResult, ingest, ingest_deletion
from outreach.metrics import NOTIFICATIONS

log = logging.getLogger(__name__)

router = APIRouter(prefix="/fhir/notify", tags=["ingest"])


class Unauthorized(Exception):
    pass


def require_secret(
    rt: RuntimeDep,
    secret: Annotated[str | None, Header(alias=SECRET_HEADER)] = None,
) -> None:
    """The shared secret `outreach subscriptions ensure` put in Subscription.channel.header."""
    expected = rt.settings.webhook_secret
    if expected is None or secret is None or not hmac.compare_digest(
        secret.encode(), expected.get_secret_value().encode()
    ):
        NOTIFICATIONS.labels("unauthorized").inc()
        raise Unauthorized


Authorized = Depends(require_secret)


def _answer(result: IngestResult) -> FhirJSONResponse:
    NOTIFICATIONS.labels(result.outcome).inc()
    return outcome_response(
        200, f"{result.change.reference} version {result.change.version_id}: {result.outcome}",
        code="informational", severity="information",
    )


@router.put("/{resource_type}/{resource_id}", dependencies=[Authorized])
async def put_resource(
    resource_type: str, resource_id: str, request: Request, rt: RuntimeDep
) -> Response:
    body = await request.body()
    try:
        resource = validate_resource(parse_json(body), resource_type)
        if resource.get("id") != resource_id:
            raise InvalidResource(f"resource id {resource.get('id')!r} does not match the URL")
    except InvalidResource as exc:
        NOTIFICATIONS.labels("invalid").inc()
        log.info("rejected notification for %s/%s: %s", resource_type, resource_id, exc)
        return FhirJSONResponse(exc.outcome, status_code=400)
    return _answer(await run_in_threadpool(ingest, rt, resource, "rest-hook"))


@router.delete("/{resource_type}/{resource_id}", dependencies=[Authorized])
async def delete_resource(resource_type: str, resource_id: str, rt: RuntimeDep) -> Response:
    result = await run_in_threadpool(ingest_deletion, rt, resource_type, resource_id, "rest-hook")
    return _answer(result)


@router.post("", dependencies=[Authorized])
async def ping(request: Request, rt: RuntimeDep) -> Response:
    """An empty POST (a subscription without payload) means "go and look": run a polling pass.
    Any body is treated as the same hint once it parses; the poll finds what changed."""
    body = await request.body()
    if body.strip():
        try:
            parse_json(body)
        except InvalidResource as exc:
            NOTIFICATIONS.labels("invalid").inc()
            return FhirJSONResponse(exc.outcome, status_code=400)
    from outreach.worker.tasks import poll

    await run_in_threadpool(poll.delay)
    NOTIFICATIONS.labels("ping").inc()
    return outcome_response(200, "polling the EHR", code="informational", severity="information")
