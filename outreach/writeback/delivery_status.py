"""Provider delivery-status callbacks: the delivery and its Communication only move forward."""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from connector.polling import fhir_instant
from outreach.core.ports import Runtime
from outreach.store import replays
from outreach.store.db import transaction
from outreach.store.models import DeliveryAttempt, EarlyStatus, ScheduledStep, Writeback
from outreach.writeback import outbox

log = logging.getLogger(__name__)

# Twilio's message statuses in the order a message passes through them; the last four are
# final. A duplicate or late callback (Twilio does not promise order) never moves back.
_RANK = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3,
         "delivered": 4, "undelivered": 4, "failed": 4, "read": 5, "canceled": 4}
NOT_DELIVERED = ("undelivered", "failed")
EARLY_KEPT = timedelta(days=1)  # how long a status waits for the send it is about


def _communication_update(resource: dict[str, Any], status: str, error_code: str | None,
                          now: datetime) -> dict[str, Any] | None:
    updated = copy.deepcopy(resource)
    if status == "delivered":
        updated["received"] = fhir_instant(now)
    elif status in NOT_DELIVERED:
        updated["status"] = "not-done"
        code = f" (provider error {error_code})" if error_code else ""
        updated["statusReason"] = {"text": f"{status}{code}"}
    else:
        return None
    return updated


def apply_status(rt: Runtime, provider_message_id: str, status: str,
                 error_code: str | None = None, signature_sha256: str | None = None) -> str:
    """Returns "updated", "ignored" (older or equal to what we have, or a request under a
    `signature_sha256` already recorded) or "kept" (no send of ours has that id yet: the
    status waits for it: `take_early` in the send's record, then `apply_taken`). The
    signature is recorded in the same transaction as the change."""
    status = status.lower()
    if status not in _RANK:
        return "ignored"
    now = rt.clock.now()
    writeback_id = None
    with transaction(rt.sessions) as session:
        if signature_sha256 is not None and not replays.claim(
                session, signature_sha256, "status", provider_message_id, now):
            return "ignored"
        attempt = session.scalars(select(DeliveryAttempt).where(
            DeliveryAttempt.provider_message_id == provider_message_id).with_for_update()
        ).first()
        if attempt is None:
            _keep(session, provider_message_id, status, error_code, now)
            return "kept"
        if _RANK[status] <= _RANK.get(attempt.provider_status or "accepted", 0):
            return "ignored"
        attempt.provider_status, attempt.provider_status_at = status, now
        attempt.error_code = error_code or attempt.error_code
        step = session.get_one(ScheduledStep, attempt.step_id)
        row = session.scalars(select(Writeback).where(
            Writeback.step_id == step.id, Writeback.resource_type == "Communication")).first()
        changed = _communication_update(row.resource, status, error_code, now) if row else None
        if row is not None and changed is not None:
            system, _, value = row.identifier.partition("|")
            writeback_id = outbox.queue(session, changed, system, value, now,
                                        operation="upsert").id
    if writeback_id is not None:
        rt.enqueue.write_back([writeback_id])
    log.info("delivery %s: %s", provider_message_id, status)
    return "updated"


def _keep(session: Session, provider_message_id: str, status: str, error_code: str | None,
          now: datetime) -> None:
    """Hold the furthest status seen for a send not recorded yet."""
    held = session.get(EarlyStatus, provider_message_id, with_for_update=True)
    if held is None:
        session.add(EarlyStatus(provider_message_id=provider_message_id, status=status,
                                error_code=error_code, received_at=now))
    elif _RANK[status] > _RANK.get(held.status, 0):
        held.status, held.error_code, held.received_at = status, error_code, now


_TAKE_EARLY = delete(EarlyStatus).where(
    EarlyStatus.provider_message_id == bindparam("provider_id")
).returning(EarlyStatus.status, EarlyStatus.error_code)


def take_early(session: Session, provider_message_id: str) -> tuple[str, str | None] | None:
    """In the transaction that records a send (last, right before its commit): the status the
    provider sent before it, removed from those waiting. Apply it with `apply_taken` after the
    commit."""
    row = session.connection().execute(_TAKE_EARLY, {"provider_id": provider_message_id}).first()
    return None if row is None else (row.status, row.error_code)


def apply_taken(rt: Runtime, provider_message_id: str | None,
                early: tuple[str, str | None] | None) -> str | None:
    if provider_message_id is None or early is None:
        return None
    log.info("delivery %s: applying the status that came before the send", provider_message_id)
    return apply_status(rt, provider_message_id, *early)


def purge_early(rt: Runtime) -> int:
    """Statuses still waiting after a day are for sends that are not ours (another app on the
    account) or never recorded: dropped, so the table stays small."""
    with transaction(rt.sessions) as session:
        gone = session.execute(delete(EarlyStatus).where(
            EarlyStatus.received_at < rt.clock.now() - EARLY_KEPT))
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]
