"""Notifications are hints (docs/ehr-connection.md): a notified version is checked against the
EHR before it is ingested, so a forged or stale payload never reaches the journeys."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select

from connector.changes import make_change, version_of
from connector.client import checked_path
from connector.errors import FhirNotFound, InvalidResource
from connector.resources import validate_resource
from outreach.core.ports import Runtime
from outreach.intake.batch import ingest_many
from outreach.intake.ingest import IngestResult, ingest, ingest_deletion
from outreach.store.models import ResourceChangeRecord, ResourceVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ignored:
    """A notification we did not act on, and why (the EHR does not have that resource, ...)."""

    reference: str
    reason: str
    outcome: Literal["ignored"] = "ignored"


def _recorded(rt: Runtime, resource_type: str, resource_id: str, version_id: str) -> bool:
    # One read, outside any transaction: BEGIN and ROLLBACK around it would triple its round
    # trips, and a committed record is never removed, so no snapshot is needed to trust a yes.
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.scalar(select(ResourceChangeRecord.id).where(
            ResourceChangeRecord.resource_type == resource_type,
            ResourceChangeRecord.resource_id == resource_id,
            ResourceChangeRecord.version_id == version_id,
        ).limit(1)) is not None


def _known_deleted(rt: Runtime, resource_type: str, resource_id: str) -> bool:
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return bool(conn.scalar(select(ResourceVersion.deleted).where(
            ResourceVersion.resource_type == resource_type,
            ResourceVersion.resource_id == resource_id)))


def _claims_newer(payload: dict[str, Any], ehr: dict[str, Any]) -> bool:
    """The payload says it is a version the EHR does not have and newer than the EHR's current:
    nothing the EHR ever sent looks like that, so it is forged (or from another server)."""
    (p_vid, p_updated), (e_vid, e_updated) = version_of(payload), version_of(ehr)
    if p_vid is not None and p_vid == e_vid:
        return False
    return p_updated is None or e_updated is None or p_updated > e_updated


# How a version is ingested: `ingest` (its own transaction) or `group_commit.ingest`.
IngestFn = Callable[[Runtime, dict[str, Any], str], IngestResult]


def _from_ehr(
    rt: Runtime, resource_type: str, resource_id: str, payload: dict[str, Any] | None,
    source: str, via: IngestFn = ingest,
) -> IngestResult | Ignored:
    assert rt.ehr is not None
    reference = f"{resource_type}/{resource_id}"
    try:
        current = rt.ehr.read(resource_type, resource_id)
        # The payload was validated on arrival: the EHR sending back that very document (the
        # usual case) needs no second pass through the R4 models.
        if current != payload:
            current = validate_resource(current, resource_type)
    except FhirNotFound:
        log.warning("notification for %s, which the EHR does not have: ignored", reference)
        return Ignored(reference, "the EHR does not have this resource")
    except InvalidResource as exc:
        log.warning("the EHR's %s is not valid R4, ignored: %s", reference, exc)
        return Ignored(reference, "the EHR's copy is not valid R4")
    if payload is not None and _claims_newer(payload, current):
        log.warning("notification for %s carries a version the EHR does not have: ignored",
                    reference)
        return Ignored(reference, "the payload's version is not the EHR's")
    # The EHR's copy is what we act on: the same version as the payload, or a newer one when the
    # payload was stale (a retried delivery overtaken by a later change).
    return via(rt, current, source)


def ingest_notified(
    rt: Runtime, resource_type: str, resource_id: str, payload: dict[str, Any] | None,
    source: str, *, via: IngestFn = ingest,
) -> IngestResult | Ignored:
    """A notification about one resource, with its (validated) payload or without one.

    A version we already recorded costs one indexed lookup and no EHR call (redeliveries are the
    common fault). Otherwise, with `OUTREACH_VERIFY_NOTIFICATIONS` (the default) the resource is
    read from the EHR and only the EHR's copy is processed; without it the payload is trusted,
    and the EHR is still read when the payload is missing or older than what we have.
    InvalidResource for a type or id outside R4's grammar (they go into EHR requests).
    `via=group_commit.ingest` (the rest-hook endpoint) stores it in a batch with concurrent
    notifications; it still returns only once this one is committed."""
    checked_path(resource_type, resource_id)
    if payload is not None:
        if rt.ehr is None or not rt.settings.verify_notifications:
            # Trusted: ingest's first statement already drops a recorded version without
            # locking or writing anything, so a separate lookup would only add a round trip.
            result = via(rt, payload, source)
            if result.outcome != "stale" or rt.ehr is None:
                return result
        else:
            version_id, _ = version_of(payload)
            if version_id is not None and _recorded(rt, resource_type, resource_id, version_id):
                return IngestResult("duplicate", make_change(payload, None, source))
    if rt.ehr is None:
        return Ignored(f"{resource_type}/{resource_id}", "no payload and no EHR to read from")
    return _from_ehr(rt, resource_type, resource_id, payload, source, via)


def ingest_deleted(
    rt: Runtime, resource_type: str, resource_id: str, source: str
) -> IngestResult | Ignored:
    """A delete notification: acted on only once the EHR confirms the resource is gone.
    InvalidResource for a type or id outside R4's grammar."""
    checked_path(resource_type, resource_id)
    if _known_deleted(rt, resource_type, resource_id):
        return ingest_deletion(rt, resource_type, resource_id, source)  # a duplicate, cheaply
    if rt.ehr is not None and rt.settings.verify_notifications:
        try:
            current = rt.ehr.read(resource_type, resource_id)
        except FhirNotFound:
            pass
        else:
            log.warning("delete notification for %s/%s, which the EHR still has: re-read",
                        resource_type, resource_id)
            return ingest(rt, validate_resource(current, resource_type), source)
    return ingest_deletion(rt, resource_type, resource_id, source)


def ingest_notified_many(
    rt: Runtime, notes: list[tuple[str, str, dict[str, Any] | None]], source: str,
) -> list[IngestResult | Ignored]:
    """`ingest_notified` for several notifications (a topic bundle's events), in order: each is
    checked as on its own, and the versions to store are stored in one transaction. An error
    storing one is raised once the others are stored."""
    trusted = rt.ehr is None or not rt.settings.verify_notifications
    results: list[IngestResult | Ignored] = []
    taken: list[tuple[int, dict[str, Any], bool]] = []  # (position, version, may re-read)
    for resource_type, resource_id, payload in notes:
        def take(_rt: Runtime, resource: dict[str, Any], _source: str,
                 payload: dict[str, Any] | None = payload) -> IngestResult:
            # Stored below with the others; a stand-in answer until then.
            first_try = trusted and payload is not None and resource is payload
            taken.append((len(results), resource, first_try))
            return IngestResult("processed", make_change(resource, None, source))

        results.append(ingest_notified(rt, resource_type, resource_id, payload, source,
                                       via=take))
    stored = ingest_many(rt, [(resource, source) for _, resource, _ in taken])
    failed: Exception | None = None
    for (position, resource, first_try), result in zip(taken, stored, strict=True):
        if isinstance(result, Exception):
            failed = failed or result
        elif first_try and result.outcome == "stale" and rt.ehr is not None:
            # As ingest_notified does: a stale trusted payload sends us to the EHR's copy.
            results[position] = _from_ehr(rt, resource["resourceType"], resource["id"],
                                          resource, source)
        else:
            results[position] = result
    if failed is not None:
        raise failed
    return results
