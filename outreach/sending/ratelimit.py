"""Messages per second per sender, shared by every worker through Redis (or in-process)."""

from __future__ import annotations

import threading
import time

import redis


class RedisRateLimiter:
    """Fixed windows of max(1 s, 1/rate): INCR is atomic, so however many workers share a
    sender, no window carries more than its share of messages."""

    def __init__(self, url: str, per_second: float) -> None:
        self._redis = redis.Redis.from_url(url)
        self._window = max(1.0, 1.0 / per_second)
        self._limit = max(1, round(per_second * self._window))

    def __call__(self, sender: str) -> None:
        while True:
            now = time.time()
            slot = int(now // self._window)
            key = f"outreach:rate:{sender}:{slot}"
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, int(self._window) + 5)
            if int(pipe.execute()[0]) <= self._limit:
                return
            time.sleep(max(0.001, (slot + 1) * self._window - now))


class LocalRateLimiter:
    """The same rate inside one process (the in-process mode has a single worker)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, sender: str) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(sender, now))
            self._next[sender] = slot + self._interval
        if slot > now:
            time.sleep(slot - now)
