"""The per-sender rate is shared: however many threads send, no second carries more."""

from __future__ import annotations

import threading
import time
from collections import Counter

from outreach.sending.ratelimit import LocalRateLimiter, RedisRateLimiter


def _burst(limiter: RedisRateLimiter | LocalRateLimiter, threads: int, each: int) -> list[float]:
    stamps: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(each):
            limiter("+15555550100")
            with lock:
                stamps.append(time.time())

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return stamps


def test_redis_limiter_holds_the_rate_across_limiters(redis_url: str) -> None:
    # Two limiter objects stand for two worker processes sharing one Redis.
    first, second = RedisRateLimiter(redis_url, 10), RedisRateLimiter(redis_url, 10)
    began = time.time()
    stamps = _burst(first, 2, 8) + _burst(second, 0, 0)
    stamps += _burst(second, 2, 7)
    per_second = Counter(int(s) for s in stamps)
    assert max(per_second.values()) <= 10
    assert time.time() - began >= 1.0  # 30 messages at 10/s cannot finish in one window


def test_local_limiter_spaces_messages() -> None:
    began = time.monotonic()
    _burst(LocalRateLimiter(20), 3, 4)  # 12 messages at 20/s: at least 0.55 s
    assert time.monotonic() - began >= 0.5
