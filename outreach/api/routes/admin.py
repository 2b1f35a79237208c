"""The admin API: journeys, a patient's outreach, steps, consent, staff Tasks, the audit log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from outreach.api.admin_gate import UNAUTHORIZED
from outreach.api.deps import RuntimeDep
from outreach.core.ports import Runtime
from outreach.reports.outcomes import DIMENSIONS, UnknownFilter
from outreach.reports.service import BadPeriod, outcome_report, period
from outreach.staff import admin
from outreach.staff.signin import caller_for
from outreach.store.controls import paused_journeys
from outreach.store.models import AuditEntry, Enrollment, ScheduledStep, Writeback

router = APIRouter(prefix="/admin", tags=["admin"])
_bearer = HTTPBearer(auto_error=False)


def require_caller(
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's name from OUTREACH_ADMIN_TOKENS (compared in constant time). AdminGate
    has refused a request without one already, before its body was read."""
    name = caller_for(rt.settings, credentials.credentials if credentials else None)
    if name is not None:
        return name
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED,
                        headers={"WWW-Authenticate": "Bearer"})


Caller = Annotated[str, Depends(require_caller)]
# Ids as the database stores them: an integer key, a FHIR id (1-64 of [A-Za-z0-9-.]).
StepId = Annotated[int, Path(ge=1, le=2**31 - 1)]
PatientId = Annotated[str, Path(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
JourneyName = Annotated[str, Path(max_length=64)]


class JourneyOut(BaseModel):
    name: str
    version: str
    path: str
    resource: str
    steps: list[str]
    paused: bool


class StepOut(BaseModel):
    id: int
    step: str
    state: str
    due_at: datetime
    attempts: int
    channel: str | None
    reason: str | None
    sent_at: datetime | None


class EnrollmentOut(BaseModel):
    id: int
    journey: str
    journey_version: str
    about: str
    anchor_at: datetime | None
    state: str
    steps: list[StepOut]


class ConsentIn(BaseModel):
    channel: Literal["sms", "email"]
    # A phone number or an email address: printable characters only (a NUL cannot be stored).
    address: str = Field(min_length=3, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    opted_out: bool


class ConsentOut(BaseModel):
    changed: bool


class TaskOut(BaseModel):
    id: int
    state: str
    description: str | None
    priority: str | None
    patient: str | None
    created_at: datetime
    written_to_ehr_as: str | None


class WritebackOut(BaseModel):
    """One record for the EHR, without its content (it may hold patient data)."""

    id: int
    resource_type: str
    identifier: str  # our system|value: no patient data
    state: str  # pending | done | local (the EHR cannot take it)
    attempts: int
    last_error: str | None
    created_at: datetime
    written_to_ehr_as: str | None


class AuditOut(BaseModel):
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] | None


def _step_out(step: ScheduledStep) -> StepOut:
    return StepOut(id=step.id, step=step.step_id, state=step.state, due_at=step.due_at,
                   attempts=step.attempts, channel=step.channel, reason=step.reason,
                   sent_at=step.sent_at)


def _not_found(exc: admin.NotFound) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))


@router.get("/journeys")
def journeys(rt: RuntimeDep, _caller: Caller) -> list[JourneyOut]:
    with rt.sessions() as session:
        paused = paused_journeys(session)
    return [JourneyOut(name=j.name, version=j.version, path=j.path,
                       resource=j.spec.trigger.resource, steps=[s.id for s in j.spec.steps],
                       paused=j.name in paused) for j in rt.journeys.journeys]


@router.post("/journeys/{name}/pause", status_code=204)
def pause(name: JourneyName, rt: RuntimeDep, caller: Caller) -> None:
    try:
        admin.set_paused(rt, name, True, caller)
    except admin.NotFound as exc:
        raise _not_found(exc) from exc


@router.post("/journeys/{name}/resume", status_code=204)
def resume(name: JourneyName, rt: RuntimeDep, caller: Caller) -> None:
    try:
        admin.set_paused(rt, name, False, caller)
    except admin.NotFound as exc:
        raise _not_found(exc) from exc


@router.get("/patients/{patient_id}/enrollments")
def patient_enrollments(
    patient_id: PatientId, rt: RuntimeDep, _caller: Caller
) -> list[EnrollmentOut]:
    try:
        enrollments = admin.patient_enrollments(rt, patient_id)
    except admin.NotFound as exc:
        raise _not_found(exc) from exc
    return [_enrollment_out(e) for e in enrollments]


def _enrollment_out(enrollment: Enrollment) -> EnrollmentOut:
    return EnrollmentOut(
        id=enrollment.id, journey=enrollment.journey,
        journey_version=enrollment.journey_version, about=enrollment.anchor_reference,
        anchor_at=enrollment.anchor_at, state=enrollment.state,
        steps=[_step_out(s) for s in sorted(enrollment.steps, key=lambda s: s.due_at)])


def _step_action(action: Callable[[Runtime, int, str], ScheduledStep], step_id: int,
                 rt: Runtime, caller: str) -> StepOut:
    try:
        return _step_out(action(rt, step_id, caller))
    except admin.NotFound as exc:
        raise _not_found(exc) from exc
    except admin.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.post("/steps/{step_id}/cancel")
def cancel_step(step_id: StepId, rt: RuntimeDep, caller: Caller) -> StepOut:
    return _step_action(admin.cancel_step, step_id, rt, caller)


@router.post("/steps/{step_id}/resend")
def resend_step(step_id: StepId, rt: RuntimeDep, caller: Caller) -> StepOut:
    return _step_action(admin.resend_step, step_id, rt, caller)


@router.put("/patients/{patient_id}/consent")
async def consent(patient_id: PatientId, body: ConsentIn, rt: RuntimeDep,
                  caller: Caller) -> ConsentOut:
    changed = await run_in_threadpool(admin.set_consent, rt, patient_id, body.channel,
                                      body.address, body.opted_out, caller)
    return ConsentOut(changed=changed)


@router.get("/tasks")
def tasks(rt: RuntimeDep, _caller: Caller,
          limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[TaskOut]:
    with rt.sessions() as session:
        rows = session.scalars(select(Writeback).where(Writeback.resource_type == "Task")
                               .order_by(Writeback.id.desc()).limit(limit))
        return [TaskOut(id=r.id, state=r.state, description=r.resource.get("description"),
                        priority=r.resource.get("priority"),
                        patient=(r.resource.get("for") or {}).get("reference"),
                        created_at=r.created_at,
                        written_to_ehr_as=f"Task/{r.server_id}" if r.server_id else None)
                for r in rows]


@router.get("/writebacks")
def writebacks(rt: RuntimeDep, _caller: Caller,
               state: Annotated[Literal["pending", "done", "local"] | None, Query()] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[WritebackOut]:
    """What is (or is not yet) written to the EHR: rows still pending with their last error,
    and those kept here because the EHR cannot take them (`local`), newest first."""
    query = select(Writeback).order_by(Writeback.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Writeback.state == state)
    with rt.sessions() as session:
        return [WritebackOut(id=r.id, resource_type=r.resource_type, identifier=r.identifier,
                             state=r.state, attempts=r.attempts,
                             last_error=(r.last_error or "")[:300] or None,
                             created_at=r.created_at,
                             written_to_ehr_as=f"{r.resource_type}/{r.server_id}"
                             if r.server_id else None)
                for r in session.scalars(query)]


@router.get("/audit")
def audit_log(rt: RuntimeDep, _caller: Caller,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    with rt.sessions() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
        return [AuditOut(at=r.at, actor=r.actor, action=r.action, target=r.target,
                         detail=r.detail) for r in rows]


_REPORT_PARAMETERS = ("from", "to", *DIMENSIONS)


@router.get("/reports/outcomes")
async def outcomes_report(
    request: Request, rt: RuntimeDep, _caller: Caller,
    first: Annotated[date, Query(alias="from", description="first day, YYYY-MM-DD")],
    last: Annotated[date, Query(alias="to", description="last day, included")],
    journey: Annotated[str | None, Query(max_length=64)] = None,
    step: Annotated[str | None, Query(max_length=130)] = None,
    channel: Annotated[str | None, Query(max_length=16)] = None,
    language: Annotated[str | None, Query(max_length=16)] = None,
    location: Annotated[str | None, Query(max_length=200)] = None,
    practitioner: Annotated[str | None, Query(max_length=200)] = None,
    service_type: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """The outcome report (the JSON of `outreach report --format json`; docs/metrics.md)."""
    # A misspelt filter (`?journy=`) must not quietly answer for the whole period.
    unknown = sorted(set(request.query_params) - set(_REPORT_PARAMETERS))
    if unknown:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"unknown query parameter {unknown[0]!r}; use "
                            + ", ".join(_REPORT_PARAMETERS))
    filters = {name: value for name, value in (
        ("journey", journey), ("step", step), ("channel", channel), ("language", language),
        ("location", location), ("practitioner", practitioner), ("service_type", service_type),
    ) if value is not None}
    try:
        chosen = period(first, last)
        return await run_in_threadpool(outcome_report, rt, chosen, filters)
    except (BadPeriod, UnknownFilter) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
