"""The write-back outbox: resources for the EHR are queued in the database, then written with
If-None-Exist (create) or as a conditional update (upsert); an EHR that is down delays them."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Executable, Table, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from connector.capabilities import capabilities
from connector.errors import FhirError, FhirNotFound
from connector.writeback import identifier_query
from outreach.core.metrics import WRITEBACKS
from outreach.core.ports import EhrClient, Runtime
from outreach.core.retry import backoff
from outreach.store.db import relax_durability, transaction
from outreach.store.models import Writeback

log = logging.getLogger(__name__)


def _insert(session: Session) -> Any:
    return {"postgresql": pg_insert, "sqlite": sqlite_insert}[session.get_bind().dialect.name]


# Built once per dialect: the outbox takes a row for every planned and every sent step, and
# building the statement (and its cache key) cost more than running it.
_PUT: dict[tuple[str, bool], Executable] = {}


def _put_statement(session: Session, known_new: bool) -> Executable:
    dialect = session.get_bind().dialect.name
    found = _PUT.get((dialect, known_new))
    if found is None:
        table = cast(Table, Writeback.__table__)
        statement = _insert(session)(table)
        if not known_new:
            # A known identifier is refreshed in place (its row locked by the conflict).
            statement = statement.on_conflict_do_update(
                index_elements=[table.c.identifier],
                set_={"resource": statement.excluded.resource,
                      "operation": statement.excluded.operation, "state": "pending",
                      "next_attempt_at": statement.excluded.next_attempt_at})
        found = _PUT[(dialect, known_new)] = statement.returning(table.c.id)
    return found


def put(
    session: Session, resource: dict[str, Any], system: str, value: str, now: datetime,
    *, step_id: int | None = None, operation: str = "create", known_new: bool = False,
) -> int:
    """Add (or, for a known identifier, refresh) an outbox row in one statement; returns its id
    for the caller to enqueue `write_back(id)` after its transaction commits. `known_new` says
    the identifier cannot exist yet (a step's first and only sent record): a plain insert."""
    # On the connection: a Core insert, without the ORM's bulk-insert machinery around it.
    row_id: int = session.connection().execute(_put_statement(session, known_new), {
        "step_id": step_id, "resource_type": resource["resourceType"],
        "identifier": f"{system}|{value}", "resource": resource, "operation": operation,
        "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
    }).scalar_one()
    return row_id


def queue(
    session: Session, resource: dict[str, Any], system: str, value: str, now: datetime,
    *, step_id: int | None = None, operation: str = "create", known_new: bool = False,
) -> Writeback:
    """`put`, returning the row."""
    row_id = put(session, resource, system, value, now, step_id=step_id, operation=operation,
                 known_new=known_new)
    return session.get_one(Writeback, row_id, populate_existing=True)


def _upsert(
    target: EhrClient, resource: dict[str, Any], system: str, value: str,
    server_id: str | None = None,
) -> dict[str, Any]:
    """Update the resource carrying our identifier, or create it. When an earlier write told us
    its id, update that id directly; otherwise search the identifier, then update (If-Match on
    its version) or create. Not conditional update: not every EHR supports it."""
    if server_id is not None:
        try:
            return target.update({**resource, "id": server_id})
        except FhirNotFound:
            pass  # removed in the EHR since: find or create it again
    query = identifier_query(system, value)
    found = list(target.search(resource["resourceType"], {"identifier": f"{system}|{value}"}))
    if not found:
        written, created = target.create(resource, if_none_exist=query)
        if created:
            return written
        found = [written]  # created meanwhile (a concurrent first write): update it
    current = found[0]
    version = (current.get("meta") or {}).get("versionId")
    return target.update({**resource, "id": current["id"]},
                         if_match=f'W/"{version}"' if version else None)


# What we write back, and how (a Consent is only ever created: each choice is a new one).
WRITTEN_TYPES = {"Communication": "upsert", "CommunicationRequest": "upsert", "Task": "upsert",
                 "QuestionnaireResponse": "upsert", "Consent": "create"}


def _interactions(operation: str) -> tuple[str, ...]:
    return ("create",) if operation == "create" else ("create", "update", "search-type")


def unsupported(rt: Runtime, resource_type: str, operation: str = "upsert") -> str | None:
    """Why the EHR cannot take this write-back (its CapabilityStatement says so), or None. An
    EHR that cannot be asked right now is assumed able: the write is tried and retried."""
    if rt.ehr is None:
        return None
    try:
        caps = capabilities(rt.ehr)
    except FhirError:
        return None
    missing = [i for i in _interactions(operation) if not caps.supports(resource_type, i)]
    if not missing:
        return None
    return f"the EHR does not support {resource_type} {', '.join(missing)}"


def support_report(rt: Runtime) -> list[str]:
    """For the start-up log: what write-back the EHR cannot take (kept locally instead)."""
    return [reason for rtype, operation in WRITTEN_TYPES.items()
            if (reason := unsupported(rt, rtype, operation))]


def write_back(rt: Runtime, writeback_id: int) -> str:
    """Write one outbox row to the EHR; on failure leave it pending with a later attempt time,
    and the sweeper offers it again."""
    with rt.sessions() as session:
        row = session.get(Writeback, writeback_id)
        if row is None or row.state == "done":
            return "done"
        resource, identifier, attempts = row.resource, row.identifier, row.attempts
        operation, server_id = row.operation, row.server_id
    system, _, value = identifier.partition("|")
    now = rt.clock.now()
    reason = unsupported(rt, resource["resourceType"], operation)
    if reason is not None:
        # Kept in our database (visible through the admin API) rather than retried forever.
        with transaction(rt.sessions) as session:
            session.execute(update(Writeback).where(Writeback.id == writeback_id).values(
                state="local", last_error=reason, attempts=attempts + 1))
        WRITEBACKS.labels("local").inc()
        return "local"
    try:
        if rt.ehr is None:
            raise FhirError("no EHR configured for write-back")
        query = identifier_query(system, value)
        if operation == "upsert":
            written = _upsert(rt.ehr, resource, system, value, server_id)
        else:
            written, _ = rt.ehr.create(resource, if_none_exist=query)
    except FhirError as exc:
        with transaction(rt.sessions) as session:
            row = session.get_one(Writeback, writeback_id)
            row.attempts, row.last_error = attempts + 1, str(exc)[:1000]
            row.next_attempt_at = now + backoff(attempts + 1, base=15)
        WRITEBACKS.labels("retry").inc()
        log.warning("write-back %s failed (attempt %s): %s", writeback_id, attempts + 1,
                    exc.status or type(exc).__name__)
        return "retry"
    with transaction(rt.sessions) as session:
        relax_durability(session)  # lost on a crash: written again, If-None-Exist dedupes
        # Done only if nobody refreshed the row with newer content while we wrote this one;
        # otherwise it stays pending (the refresher queued it) and is written again.
        done = session.execute(update(Writeback).where(
            Writeback.id == writeback_id, Writeback.resource == resource
        ).values(state="done", server_id=written.get("id"), done_at=now, attempts=attempts + 1))
        if done.rowcount == 0:  # type: ignore[attr-defined]
            # Newer content was queued while we wrote, and may even have been written before
            # this write landed: write the row's current content again, so the EHR ends with it.
            session.execute(update(Writeback).where(Writeback.id == writeback_id).values(
                server_id=written.get("id"), state="pending", next_attempt_at=now))
            superseded = True
        else:
            superseded = False
    if superseded:
        rt.enqueue.write_back([writeback_id])
        return "superseded"
    WRITEBACKS.labels("done").inc()
    return "done"
