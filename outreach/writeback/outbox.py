"""The write-back outbox: resources for the EHR are queued in the database, then written with
If-None-Exist (create) or as a conditional update (upsert); an EHR that is down delays them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Executable, Table, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from connector import bundles
from connector.bundles import Entry
from connector.capabilities import Capabilities, ResourceSupport, capabilities
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


def _partner_of(row: Any) -> tuple[str, str] | None:
    """A sent message's two rows go together: its Communication (`system|uid`) and its
    CommunicationRequest marked completed (`system|request-uid`). The other one's identifier
    and type, for either."""
    system, _, value = row.identifier.partition("|")
    if row.resource_type == "Communication" and row.step_id is not None:
        return request_of(row.identifier), "CommunicationRequest"
    if row.resource_type == "CommunicationRequest" and value.startswith("request-"):
        return f"{system}|{value.removeprefix('request-')}", "Communication"
    return None


def _partner(connection: Connection, row: Any) -> Any | None:
    """The other row of a sent message's pair (`_partner_of`), if pending."""
    other = _partner_of(row)
    if other is None:
        return None
    found = connection.execute(_PARTNER, {"identifier": other[0]}).first()
    return found if found is not None and found.resource_type == other[1] else None


def write_back(rt: Runtime, writeback_id: int) -> str:
    """Write one outbox row to the EHR; on failure leave it pending with a later attempt time,
    and the sweeper offers it again. A sent message's Communication and its CommunicationRequest
    are written together by the Communication's task, in one transaction Bundle where the EHR
    takes them (one request each otherwise); the request's own task (the sweeper's, or an
    older sender's: a send queues only the Communication's) leaves it to that one.
    Returns done, retry, local, superseded, with-communication or claimed."""
    # Two reads that need no transaction around them (each sees the latest commit, as in a
    # read-committed session): no BEGIN, no ROLLBACK.
    with reads(rt.sessions) as connection:
        found = connection.execute(_READ, {"id": writeback_id}).first()
        if found is None or found.state == "done":
            return "done"
        if found.claimed_until is not None and found.claimed_until > rt.clock.now():
            return "claimed"  # a batch task holds it (write_back_many) and writes it
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
    return _write_together(rt, rows, together)[0]


# A batch's hold on the rows it claimed: long enough for a Bundle refused and then written one
# row at a time to a slow EHR. A worker that dies holding rows frees them when it runs out, and
# the sweep offers them again (their next attempt is moved to the same time).
CLAIM_LEASE = timedelta(minutes=5)
# The sweep hands due rows to a task by moving their next attempt this far ahead
# (outreach.sending.sweep): to that task, a row due within it is due.
OFFER_LEASE = timedelta(minutes=2)

# Built once: every batch claims its rows, then the partners of its sent messages' rows. A row
# locked by another transaction (another task's claim, a refresh, the sweep's lease) is skipped,
# never waited on: two tasks claiming a pair from either end cannot deadlock, and whoever holds
# the row (or queued it) writes it.
_UNCLAIMED = or_(_WRITEBACKS.c.claimed_until.is_(None),
                 _WRITEBACKS.c.claimed_until <= bindparam("now"))


def _claim_statement(*where: Any) -> Executable:
    free = select(_WRITEBACKS.c.id).where(
        *where, _WRITEBACKS.c.state == "pending", _UNCLAIMED).with_for_update(skip_locked=True)
    return update(_WRITEBACKS).where(_WRITEBACKS.c.id.in_(free.scalar_subquery())).values(
        claimed_until=bindparam("until"), next_attempt_at=bindparam("until"),
    ).returning(*_WRITEBACKS.c)


_CLAIM_IDS = _claim_statement(_WRITEBACKS.c.id.in_(bindparam("ids", expanding=True)),
                              _WRITEBACKS.c.next_attempt_at <= bindparam("due_by"))
_CLAIM_PARTNERS = _claim_statement(
    _WRITEBACKS.c.identifier.in_(bindparam("identifiers", expanding=True)),
    _WRITEBACKS.c.resource_type.in_(("Communication", "CommunicationRequest")))


def _claim(rt: Runtime, writeback_ids: list[int]) -> list[list[_Row]]:
    """Take the rows that are pending, due and held by no other task, with the pending partner
    of each sent message's row, in one transaction: a row alone, or a row and its partner (a
    pair goes in the same Bundle, as on the single path), ordered as asked. Rows another task
    holds are left to it; a partner it holds is written by it."""
    now = rt.clock.now()
    params = {"now": now, "until": now + CLAIM_LEASE}
    with transaction(rt.sessions) as session:
        relax_durability(session)  # a claim lost in a crash frees the rows: idempotent writes
        connection = session.connection()
        found = list(connection.execute(_CLAIM_IDS, {
            **params, "ids": writeback_ids, "due_by": now + OFFER_LEASE}))
        claimed = {row.identifier for row in found}
        wanted = {other for row in found
                  if (other := _partner_of(row)) is not None and other[0] not in claimed}
        partners = list(connection.execute(_CLAIM_PARTNERS, {
            **params, "identifiers": [identifier for identifier, _ in wanted]})) if wanted else []
    # Every row claimed is written; a partner of another type than expected (never, with our
    # identifiers) goes alone, at the end.
    paired = {row.identifier: row for row in partners if (row.identifier, row.resource_type)
              in wanted}
    order = {writeback_id: index for index, writeback_id in enumerate(writeback_ids)}
    units = []
    for row in sorted(found, key=lambda row: order[row.id]):
        other = _partner_of(row)
        partner = paired.pop(other[0], None) if other is not None else None
        units.append([_row(row)] if partner is None else [_row(row), _row(partner)])
    taken = {row.identifier for unit in units for row in unit}
    units.extend([_row(row)] for row in partners if row.identifier not in taken)
    return units


def write_back_many(rt: Runtime, writeback_ids: list[int]) -> dict[int, str]:
    """Write outbox rows to the EHR in as few requests as it takes: the rows this task claims
    (`_claim`: with their sent messages' partners) go in one transaction Bundle where the EHR
    lists `transaction` (or several of at most `writeback_bundle_entries`), one request each
    otherwise. A Bundle the EHR refuses (4xx) is written again one row at a time, so one bad
    row is left pending with its error and the others land; an EHR that is down (5xx, network)
    leaves them all pending for a later attempt. Returns the outcome of each row written (done,
    retry, local, superseded); rows not claimed (done, not due, held by another task) are not
    in it."""
    units = _claim(rt, writeback_ids)
    if not units:
        return {}
    caps = _transactions(rt)
    alone: list[_Row] = []
    groups: list[list[tuple[_Row, Entry]]] = [[]]
    most = rt.settings.writeback_bundle_entries
    for unit in units:
        entries = [_entry(rt, caps, row) if caps is not None else None for row in unit]
        fits = [(row, entry) for row, entry in zip(unit, entries, strict=True) if entry]
        alone.extend(row for row, entry in zip(unit, entries, strict=True) if entry is None)
        if len(groups[-1]) + len(fits) > most:  # an EHR's cap on a transaction's size
            groups.append([])
        groups[-1].extend(fits)
    outcomes: dict[int, str] = {}
    for group in groups:
        if len(group) < 2:  # a Bundle of one saves nothing, and costs two requests if refused
            alone.extend(row for row, _ in group)
            continue
        rows = [row for row, _ in group]
        written = _write_together(rt, rows, [entry for _, entry in group])
        outcomes.update(zip([row.id for row in rows], written, strict=True))
    outcomes.update({row.id: _write_one(rt, row) for row in alone})
    return outcomes


def _bundle_entries(rt: Runtime, rows: list[_Row]) -> list[Entry] | None:
    """The rows as transaction entries, or None when the EHR cannot take them in one: it lists
    no `transaction`, or an upsert of a resource whose id we do not know needs a conditional
    update it does not list. Every entry is safe to repeat: a conditional create, or a PUT."""
    caps = _transactions(rt)
    if caps is None:
        return None
    entries = [_entry(rt, caps, row) for row in rows]
    return None if None in entries else cast(list[Entry], entries)


def _transactions(rt: Runtime) -> Capabilities | None:
    """The EHR's capabilities when it takes transaction Bundles, else None."""
    if rt.ehr is None or not hasattr(rt.ehr, "transaction"):
        return None
    try:
        caps = capabilities(rt.ehr)
    except FhirError:
        return None
    return caps if caps.transactions else None


def _entry(rt: Runtime, caps: Capabilities, row: _Row) -> Entry | None:
    """The row as a transaction entry safe to repeat (a conditional create, or a PUT), or None
    when it must go on its own: the EHR cannot take it at all (the one-by-one path keeps it
    locally and records why), or it is an upsert of a resource whose id we do not know and
    the EHR lists no conditional update."""
    if unsupported(rt, row.resource["resourceType"], row.operation) is not None:
        return None
    rtype = row.resource["resourceType"]
    system, value = row.system_value
    if row.operation == "create":
        return Entry(row.resource, "POST", rtype, if_none_exist=identifier_query(system, value))
    if row.server_id is not None:
        return Entry({**row.resource, "id": row.server_id}, "PUT", f"{rtype}/{row.server_id}")
    if caps.resources.get(rtype, ResourceSupport()).conditional_update:
        return Entry(row.resource, "PUT", f"{rtype}?{identifier_query(system, value)}")
    return None


def _write_together(rt: Runtime, rows: list[_Row], entries: list[Entry]) -> list[str]:
    """The rows in one transaction Bundle; each row's outcome, in order."""
    now = rt.clock.now()
    assert rt.ehr is not None
    try:
        answer = rt.ehr.transaction(bundles.transaction(entries), idempotent=True)  # type: ignore[attr-defined]
    except FhirUnavailable as exc:
        # All or nothing: the EHR kept none of them, and all are written again later.
        _retry_all(rt, rows, exc, now)
        return ["retry"] * len(rows)
    except FhirError as exc:
        # Refused, not down: an EHR that lists `transaction` yet will not take this one would
        # refuse it on every retry (one bad row refuses the whole Bundle). One request each
        # instead, as for an EHR without them: the bad row is kept pending with its error, the
        # others land.
        log.warning("write-back %s (%s rows): the EHR refused the Bundle (%s); writing one by one",
                    rows[0].id, len(rows), exc.status or type(exc).__name__)
        return [_write_one(rt, row) for row in rows]
    ids = bundles.written_ids(answer, len(rows))
    return _all_done(rt, list(zip(rows, ids, strict=True)), now)


def _write_one(rt: Runtime, row: _Row) -> str:
    system, value = row.system_value
    now = rt.clock.now()
    reason = unsupported(rt, row.resource["resourceType"], row.operation)
    if reason is not None:
        # Kept in our database (visible through the admin API) rather than retried forever.
        with transaction(rt.sessions) as session:
            session.execute(update(Writeback).where(Writeback.id == row.id).values(
                state="local", last_error=reason, attempts=row.attempts + 1, claimed_until=None))
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
    _retry_all(rt, [row], exc, now)


_RETRY = update(_WRITEBACKS).where(_WRITEBACKS.c.id == bindparam("row_id")).values(
    attempts=bindparam("new_attempts"), last_error=bindparam("error"), claimed_until=None,
    next_attempt_at=bindparam("retry_at"))


def _retry_all(rt: Runtime, rows: list[_Row], exc: FhirError, now: datetime) -> None:
    """Leave the rows pending with the error and a later attempt time, in one transaction."""
    params = [{"row_id": row.id, "new_attempts": row.attempts + 1, "error": str(exc)[:1000],
               "retry_at": now + backoff(row.attempts + 1, base=15)} for row in rows]
    with transaction(rt.sessions) as session:
        session.connection().execute(_RETRY, params if len(params) > 1 else params[0])
    WRITEBACKS.labels("retry").inc(len(rows))
    log.warning("write-back %s failed (attempt %s%s): %s", rows[0].id, rows[0].attempts + 1,
                f", {len(rows)} rows" if len(rows) > 1 else "", exc.status or type(exc).__name__)


def _done(rt: Runtime, row: _Row, written: dict[str, Any], now: datetime) -> str:
    return _all_done(rt, [(row, written.get("id"))], now)[0]


# Built once: a batch marks its rows done in one executemany (pipelined by psycopg), then asks
# which rows it did not mark (refreshed meanwhile).
_DONE = update(_WRITEBACKS).where(
    _WRITEBACKS.c.id == bindparam("row_id"), _WRITEBACKS.c.resource == bindparam("written"),
).values(state="done", server_id=bindparam("new_server_id"), done_at=bindparam("done_at"),
         attempts=bindparam("new_attempts"), claimed_until=None)
_NOT_DONE = select(_WRITEBACKS.c.id).where(
    _WRITEBACKS.c.id.in_(bindparam("ids", expanding=True)), _WRITEBACKS.c.state != "done")


def _all_done(rt: Runtime, rows: list[tuple[_Row, str | None]], now: datetime) -> list[str]:
    """Record the rows written (with the server id each got), in one transaction. A row is done
    only if nobody refreshed it with newer content while we wrote it; otherwise it stays pending
    and is written again (superseded)."""
    params = [{"row_id": row.id, "written": row.resource, "done_at": now,
               "new_server_id": written_id or row.server_id, "new_attempts": row.attempts + 1}
              for row, written_id in rows]
    with transaction(rt.sessions) as session:
        relax_durability(session)  # lost on a crash: written again, If-None-Exist dedupes
        connection = session.connection()
        if len(params) == 1:  # one statement: its row count says whether it was refreshed
            marked = connection.execute(_DONE, params[0]).rowcount
            stale = set() if marked else {rows[0][0].id}
        else:
            connection.execute(_DONE, params)
            stale = set(connection.execute(_NOT_DONE, {"ids": [p["row_id"] for p in params]})
                        .scalars())
        for row, written_id in rows:
            if row.id in stale:
                # Newer content was queued while we wrote, and may even have been written before
                # this write landed: write the row's current content again, so the EHR ends
                # with it.
                session.execute(update(Writeback).where(Writeback.id == row.id).values(
                    server_id=written_id or row.server_id, state="pending", next_attempt_at=now,
                    claimed_until=None))
    superseded = [row.id for row, _ in rows if row.id in stale]
    if superseded:
        rt.enqueue.write_back(superseded)
    WRITEBACKS.labels("done").inc(len(rows) - len(superseded))
    return ["superseded" if row.id in stale else "done" for row, _ in rows]
