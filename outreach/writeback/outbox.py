"""The write-back outbox: resources for the EHR are queued in the database, then written with
If-None-Exist (create) or as a conditional update (upsert); an EHR that is down delays them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Executable, Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from connector import bundles
from connector.bundles import Entry
from connector.capabilities import ResourceSupport, capabilities
from connector.errors import FhirError, FhirNotFound, FhirUnavailable
from connector.writeback import identifier_query, request_identifier
from outreach.core.metrics import WRITEBACKS
from outreach.core.ports import EhrClient, Runtime
from outreach.core.retry import backoff
from outreach.store.db import reads, relax_durability, transaction
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


# A session whose `info` holds this key takes no outbox rows from `put` (a forecast's store:
# it writes nothing back, so building and storing what it would write is wasted).
DROP_WRITEBACKS = "outreach.drop_writebacks"


def put(
    session: Session, resource: dict[str, Any], system: str, value: str, now: datetime,
    *, step_id: int | None = None, operation: str = "create", known_new: bool = False,
) -> int:
    """Add (or, for a known identifier, refresh) an outbox row in one statement; returns its id
    for the caller to enqueue `write_back(id)` after its transaction commits. `known_new` says
    the identifier cannot exist yet (a step's first and only sent record): a plain insert.
    Returns 0 (no row) in a session that drops write-backs (DROP_WRITEBACKS)."""
    if session.info.get(DROP_WRITEBACKS):
        return 0
    return _put(session, resource, system, value, now, step_id=step_id, operation=operation,
                known_new=known_new)


def _put(
    session: Session, resource: dict[str, Any], system: str, value: str, now: datetime,
    *, step_id: int | None = None, operation: str = "create", known_new: bool = False,
) -> int:
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
    """`put`, returning the row (always written: these are rare, and their callers need it)."""
    row_id = _put(session, resource, system, value, now, step_id=step_id, operation=operation,
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


@dataclass(frozen=True)
class _Row:
    """An outbox row as read before writing it (the write happens outside any transaction)."""

    id: int
    resource: dict[str, Any]
    identifier: str
    attempts: int
    operation: str
    server_id: str | None

    @property
    def system_value(self) -> tuple[str, str]:
        system, _, value = self.identifier.partition("|")
        return system, value


def _row(row: Any) -> _Row:
    # A Writeback, or a row of its columns.
    return _Row(row.id, row.resource, row.identifier, row.attempts, row.operation, row.server_id)


# Built once: every write-back reads its row, and a sent message's the row's partner.
_WRITEBACKS = cast(Table, Writeback.__table__)
_READ = select(_WRITEBACKS).where(_WRITEBACKS.c.id == bindparam("id"))
_PARTNER = select(_WRITEBACKS).where(_WRITEBACKS.c.identifier == bindparam("identifier"),
                                    _WRITEBACKS.c.state == "pending")


def request_of(identifier: str) -> str:
    """The identifier of the CommunicationRequest a sent step's Communication (`system|uid`)
    is written with: its write-back carries the request, which gets no task of its own."""
    system, _, value = identifier.partition("|")
    return f"{system}|{request_identifier(value)}"


def _partner(connection: Connection, row: Any) -> Any | None:
    """A sent message's two rows go together: its Communication (`system|uid`) and its
    CommunicationRequest marked completed (`system|request-uid`). The other one, if pending."""
    system, _, value = row.identifier.partition("|")
    if row.resource_type == "Communication" and row.step_id is not None:
        other, other_type = request_of(row.identifier), "CommunicationRequest"
    elif row.resource_type == "CommunicationRequest" and value.startswith("request-"):
        other, other_type = f"{system}|{value.removeprefix('request-')}", "Communication"
    else:
        return None
    found = connection.execute(_PARTNER, {"identifier": other}).first()
    return found if found is not None and found.resource_type == other_type else None


def write_back(rt: Runtime, writeback_id: int) -> str:
    """Write one outbox row to the EHR; on failure leave it pending with a later attempt time,
    and the sweeper offers it again. A sent message's Communication and its CommunicationRequest
    are written together by the Communication's task, in one transaction Bundle where the EHR
    takes them (one request each otherwise); the request's own task (the sweeper's, or an
    older sender's: a send queues only the Communication's) leaves it to that one.
    Returns done, retry, local, superseded or with-communication."""
    # Two reads that need no transaction around them (each sees the latest commit, as in a
    # read-committed session): no BEGIN, no ROLLBACK.
    with reads(rt.sessions) as connection:
        found = connection.execute(_READ, {"id": writeback_id}).first()
        if found is None or found.state == "done":
            return "done"
        row = _row(found)
        partner_row = _partner(connection, found)
        partner = _row(partner_row) if partner_row is not None else None
    if partner is None:
        return _write_one(rt, row)
    if partner.resource["resourceType"] == "Communication":
        # Its Communication's task writes both (it is queued, or the sweeper offers it): two
        # tasks writing the same pair would both pay the EHR for it.
        return "with-communication"
    rows = [row, partner]
    together = _bundle_entries(rt, rows)
    if together is None:  # the EHR takes no transactions (or not these): one request each
        outcome = _write_one(rt, row)
        _write_one(rt, partner)
        return outcome
    return _write_together(rt, rows, together)


def _bundle_entries(rt: Runtime, rows: list[_Row]) -> list[Entry] | None:
    """The rows as transaction entries, or None when the EHR cannot take them in one: it lists
    no `transaction`, or an upsert of a resource whose id we do not know needs a conditional
    update it does not list. Every entry is safe to repeat: a conditional create, or a PUT."""
    if rt.ehr is None or not hasattr(rt.ehr, "transaction"):
        return None
    try:
        caps = capabilities(rt.ehr)
    except FhirError:
        return None
    if not caps.transactions:
        return None
    entries = []
    for row in rows:
        if unsupported(rt, row.resource["resourceType"], row.operation) is not None:
            return None  # kept locally: the one-by-one path records why
        rtype = row.resource["resourceType"]
        system, value = row.system_value
        if row.operation == "create":
            entries.append(Entry(row.resource, "POST", rtype,
                                 if_none_exist=identifier_query(system, value)))
        elif row.server_id is not None:
            entries.append(Entry({**row.resource, "id": row.server_id}, "PUT",
                                 f"{rtype}/{row.server_id}"))
        elif caps.resources.get(rtype, ResourceSupport()).conditional_update:
            entries.append(Entry(row.resource, "PUT",
                                 f"{rtype}?{identifier_query(system, value)}"))
        else:
            return None
    return entries


def _write_together(rt: Runtime, rows: list[_Row], entries: list[Entry]) -> str:
    now = rt.clock.now()
    assert rt.ehr is not None
    try:
        answer = rt.ehr.transaction(bundles.transaction(entries), idempotent=True)  # type: ignore[attr-defined]
    except FhirUnavailable as exc:
        # All or nothing: the EHR kept neither, and both are written again later.
        for row in rows:
            _retry_later(rt, row, exc, now)
        return "retry"
    except FhirError as exc:
        # Refused, not down: an EHR that lists `transaction` yet will not take this one would
        # refuse it on every retry. One request each instead, as for an EHR without them.
        log.warning("write-back %s: the EHR refused the Bundle (%s); writing one by one",
                    rows[0].id, exc.status or type(exc).__name__)
        outcomes = [_write_one(rt, row) for row in rows]
        return outcomes[0]
    ids = bundles.written_ids(answer, len(rows))
    return _all_done(rt, list(zip(rows, ids, strict=True)), now)[0]


def _write_one(rt: Runtime, row: _Row) -> str:
    system, value = row.system_value
    now = rt.clock.now()
    reason = unsupported(rt, row.resource["resourceType"], row.operation)
    if reason is not None:
        # Kept in our database (visible through the admin API) rather than retried forever.
        with transaction(rt.sessions) as session:
            session.execute(update(Writeback).where(Writeback.id == row.id).values(
                state="local", last_error=reason, attempts=row.attempts + 1))
        WRITEBACKS.labels("local").inc()
        return "local"
    try:
        if rt.ehr is None:
            raise FhirError("no EHR configured for write-back")
        query = identifier_query(system, value)
        if row.operation == "upsert":
            written = _upsert(rt.ehr, row.resource, system, value, row.server_id)
        else:
            written, _ = rt.ehr.create(row.resource, if_none_exist=query)
    except FhirError as exc:
        _retry_later(rt, row, exc, now)
        return "retry"
    return _done(rt, row, written, now)


def _retry_later(rt: Runtime, row: _Row, exc: FhirError, now: datetime) -> None:
    with transaction(rt.sessions) as session:
        found = session.get_one(Writeback, row.id)
        found.attempts, found.last_error = row.attempts + 1, str(exc)[:1000]
        found.next_attempt_at = now + backoff(row.attempts + 1, base=15)
    WRITEBACKS.labels("retry").inc()
    log.warning("write-back %s failed (attempt %s): %s", row.id, row.attempts + 1,
                exc.status or type(exc).__name__)


def _done(rt: Runtime, row: _Row, written: dict[str, Any], now: datetime) -> str:
    return _all_done(rt, [(row, written.get("id"))], now)[0]


def _all_done(rt: Runtime, rows: list[tuple[_Row, str | None]], now: datetime) -> list[str]:
    """Record the rows written (with the server id each got), in one transaction."""
    superseded = []
    with transaction(rt.sessions) as session:
        relax_durability(session)  # lost on a crash: written again, If-None-Exist dedupes
        for row, written_id in rows:
            server_id = written_id or row.server_id
            # Done only if nobody refreshed the row with newer content while we wrote this one;
            # otherwise it stays pending (the refresher queued it) and is written again.
            done = session.execute(update(Writeback).where(
                Writeback.id == row.id, Writeback.resource == row.resource
            ).values(state="done", server_id=server_id, done_at=now, attempts=row.attempts + 1))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                # Newer content was queued while we wrote, and may even have been written before
                # this write landed: write the row's current content again, so the EHR ends
                # with it.
                session.execute(update(Writeback).where(Writeback.id == row.id).values(
                    server_id=server_id, state="pending", next_attempt_at=now))
                superseded.append(row.id)
    if superseded:
        rt.enqueue.write_back(superseded)
    WRITEBACKS.labels("done").inc(len(rows) - len(superseded))
    return ["superseded" if row.id in superseded else "done" for row, _ in rows]
