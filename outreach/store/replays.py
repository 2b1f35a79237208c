"""Provider webhook signatures accepted, recorded for good, so that no signed request is acted on
twice. Twilio's signature has no timestamp or nonce: a captured request stays valid forever, and
its fields can be re-split without changing it. The record is a row in the same transaction as
what the request did, so it holds across API processes, restarts and a Redis flush."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outreach.store.models import WebhookSignature


def digest(signature: str) -> str:
    """What is stored: the signature header's SHA-256 (hex), never the signature itself."""
    return hashlib.sha256(signature.encode()).hexdigest()


def accepted_for(session: Session, sha256: str) -> str | None:
    """The message SID a request with this signature was accepted for, if one was."""
    return session.scalar(select(WebhookSignature.message_sid).where(
        WebhookSignature.sha256 == sha256))


def claim(session: Session, sha256: str, kind: str, message_sid: str, now: datetime) -> bool:
    """Record the signature in the caller's transaction; False when it is recorded already (a
    concurrent request with the same signature committed first), with the transaction intact."""
    try:
        with session.begin_nested():
            session.add(WebhookSignature(sha256=sha256, kind=kind, message_sid=message_sid,
                                         received_at=now))
    except IntegrityError:
        return False
    return True
