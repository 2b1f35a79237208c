"""Webhook signatures already accepted, so that no signed request is acted on twice.

Twilio's signature has no timestamp or nonce: a captured request stays valid forever, and its
fields can be re-split without changing it. Each accepted signature is remembered (as a SHA-256,
with the message SID it was accepted for): in Redis when the service has a broker, shared by
every API replica, for `TTL_SECONDS`; otherwise in this process's memory, for the newest
`MEMORY_ENTRIES`. The permanent guard for replies remains inbound_messages' unique MessageSid.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Protocol

import redis

log = logging.getLogger(__name__)

TTL_SECONDS = 30 * 24 * 3600
MEMORY_ENTRIES = 100_000


class SeenSignatures(Protocol):
    def accepted_for(self, signature: str) -> str | None:
        """The message SID a request with this signature was accepted for, if one was."""

    def remember(self, signature: str, message_sid: str) -> None: ...


def _key(signature: str) -> str:
    return "outreach:twilio-signature:" + hashlib.sha256(signature.encode()).hexdigest()


class RedisSignatures:
    """Shared by every API process. A Redis outage is logged and lets requests through: the
    field grammar and the MessageSid's unique key still stop a re-split replay."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def accepted_for(self, signature: str) -> str | None:
        try:
            value = self._redis.get(_key(signature))
        except redis.RedisError as exc:
            log.warning("webhook replay check skipped, Redis unavailable: %s", exc)
            return None
        return value.decode() if isinstance(value, bytes) else None

    def remember(self, signature: str, message_sid: str) -> None:
        try:
            self._redis.set(_key(signature), message_sid, ex=TTL_SECONDS)
        except redis.RedisError as exc:
            log.warning("webhook signature not recorded, Redis unavailable: %s", exc)


class MemorySignatures:
    """Without a broker there is no shared store: each API process remembers what it accepted
    itself (a replay sent to another replica is still stopped by the MessageSid's unique key)."""

    def __init__(self, capacity: int = MEMORY_ENTRIES) -> None:
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def accepted_for(self, signature: str) -> str | None:
        with self._lock:
            return self._seen.get(_key(signature))

    def remember(self, signature: str, message_sid: str) -> None:
        with self._lock:
            self._seen[_key(signature)] = message_sid
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)


_stores: dict[str | None, SeenSignatures] = {}
_stores_lock = threading.Lock()


def seen_signatures(broker_url: str | None) -> SeenSignatures:
    """The store for this deployment: Redis at the broker's URL, else this process's memory."""
    with _stores_lock:
        store = _stores.get(broker_url)
        if store is None:
            store = RedisSignatures(broker_url) if broker_url else MemorySignatures()
            _stores[broker_url] = store
        return store
