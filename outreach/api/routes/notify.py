"""The R4 rest-hook receiver: PUT/DELETE {endpoint}/{Type}/{id} and the empty POST ping."""

from __future__ import annotations

import hmac
import logging
from functools import partial
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from connector.client import reference_problem
from connector.errors import FhirUnavailable, InvalidResource
from connector.notifications import TopicNotification, parse_notification
from connector.resources import parse_json, validate_resource
from connector.subscriptions import SECRET_HEADER
from outreach.api.deps import FhirJSONResponse, RuntimeDep, outcome_response
from outreach.core.metrics import NOTIFICATIONS
from outreach.core.ports import Runtime
from outreach.intake import group_commit
from outreach.intake.ingest import IngestResult
from outreach.intake.notifications import Ignored, ingest_deleted, ingest_notified
from outreach.intake.topics import handle_notification

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


def _answer(result: IngestResult | Ignored) -> FhirJSONResponse:
    NOTIFICATIONS.labels(result.outcome).inc()
    if isinstance(result, Ignored):
        text = f"{result.reference}: ignored ({result.reason})"
    else:
        text = f"{result.change.reference} version {result.change.version_id}: {result.outcome}"
    return outcome_response(200, text, code="informational", severity="information")


def _ehr_unavailable(exc: FhirUnavailable) -> FhirJSONResponse:
    """We could not check the notification against the EHR: ask the sender to retry (the
    reconciler picks the change up anyway if it gives up)."""
    NOTIFICATIONS.labels("unverified").inc()
    response = outcome_response(503, f"the EHR is unavailable: {exc}", code="transient")
    response.headers["Retry-After"] = str(int(exc.retry_after or 5))
    return response


def _refused_path(resource_type: str, resource_id: str) -> FhirJSONResponse | None:
    """A 400 for a type or id outside R4's grammar: they go into requests to the EHR (`..`
    would leave its base, `?` add a query) and into our tables."""
    problem = reference_problem(resource_type, resource_id)
    if problem is None:
        return None
    NOTIFICATIONS.labels("invalid").inc()
    log.info("rejected a notification: %s", problem)
    return outcome_response(400, problem)


# The notifications' own threads (`OUTREACH_NOTIFY_THREADS`), not the thread pool the rest of
# the app shares (anyio's 40): each thread mostly waits for its group commit, and the more
# notifications wait together, the bigger (and the cheaper per notification) each batch.
_LIMITERS: dict[int, anyio.CapacityLimiter] = {}


def notify_limiter(rt: Runtime) -> anyio.CapacityLimiter:
    size = rt.settings.notify_threads
    return _LIMITERS.get(size) or _LIMITERS.setdefault(size, anyio.CapacityLimiter(size))


@router.put("/{resource_type}/{resource_id}", dependencies=[Authorized])
async def put_resource(
    resource_type: str, resource_id: str, request: Request, rt: RuntimeDep
) -> Response:
    if refused := _refused_path(resource_type, resource_id):
        return refused
    body = await request.body()
    try:
        resource = validate_resource(parse_json(body), resource_type)
        if resource.get("id") != resource_id:
            raise InvalidResource(f"resource id {resource.get('id')!r} does not match the URL")
    except InvalidResource as exc:
        NOTIFICATIONS.labels("invalid").inc()
        log.info("rejected notification for %s/%s: %s", resource_type, resource_id, exc)
        return FhirJSONResponse(exc.outcome, status_code=400)
    try:
        # Group commit: stored in one transaction with whatever else is arriving; answered
        # once this notification's batch has committed.
        result = await anyio.to_thread.run_sync(partial(
            ingest_notified, rt, resource_type, resource_id, resource, "rest-hook",
            via=group_commit.ingest,
        ), limiter=notify_limiter(rt))
    except FhirUnavailable as exc:
        return _ehr_unavailable(exc)
    return _answer(result)


@router.delete("/{resource_type}/{resource_id}", dependencies=[Authorized])
async def delete_resource(resource_type: str, resource_id: str, rt: RuntimeDep) -> Response:
    if refused := _refused_path(resource_type, resource_id):
        return refused
    try:
        result = await run_in_threadpool(
            ingest_deleted, rt, resource_type, resource_id, "rest-hook"
        )
    except FhirUnavailable as exc:
        return _ehr_unavailable(exc)
    return _answer(result)


@router.post("", dependencies=[Authorized])
async def ping(request: Request, rt: RuntimeDep) -> Response:
    """A topic-based notification Bundle (Backport IG) is processed event by event. An empty POST
    (an R4 subscription without payload) means "go and look": run a polling pass; so does any
    other body that parses."""
    body = await request.body()
    if body.strip():
        try:
            data = parse_json(body)
            if isinstance(data, dict) and data.get("resourceType") == "Bundle":
                # Valid R4 first: the reader below trusts the shape (entries are objects,
                # references are strings).
                note = parse_notification(validate_resource(data, "Bundle"))
                return await _topic(rt, note)
        except InvalidResource as exc:
            NOTIFICATIONS.labels("invalid").inc()
            return FhirJSONResponse(exc.outcome, status_code=400)
    await run_in_threadpool(rt.enqueue.poll)
    NOTIFICATIONS.labels("ping").inc()
    return outcome_response(200, "polling the EHR", code="informational", severity="information")


async def _topic(rt: RuntimeDep, note: TopicNotification) -> Response:
    try:
        result = await run_in_threadpool(handle_notification, rt, note)
    except FhirUnavailable as exc:
        return _ehr_unavailable(exc)
    NOTIFICATIONS.labels(f"topic-{result.type}").inc()
    outcomes = ", ".join(r.outcome for r in result.results) or "no events"
    gap = f"; events {result.gap[0]}..{result.gap[1] or ''} missed" if result.gap else ""
    recovery = f"; recovering by {result.recovery}" if result.recovery else ""
    return outcome_response(
        200, f"Subscription/{result.subscription_id} {result.type}: {outcomes}{gap}{recovery}",
        code="informational", severity="information",
    )
