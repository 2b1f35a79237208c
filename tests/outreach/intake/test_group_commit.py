"""Group commit's batching under load, with the ingest itself stood in for: a lone caller is
never held back, callers arriving while a batch commits share the next one, and every caller
still gets its own answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from outreach.core.ports import Runtime
from outreach.intake import group_commit

GATHER = 0.3  # long enough for a test's threads to arrive within it


class _Ingest:
    """Stands in for `ingest_many`: records each batch; a batch holding `hold` waits for
    `release` (a batch in flight)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold: str | None = None
        self.release = threading.Event()
        self.started = threading.Event()
        self.seconds = 0.0  # each batch's time in flight

    def __call__(self, _rt: Runtime, items: Sequence[tuple[dict[str, Any], str]]) -> list[Any]:
        ids = [resource["id"] for resource, _ in items]
        self.batches.append(ids)
        time.sleep(self.seconds)
        if self.hold in ids:
            self.started.set()
            assert self.release.wait(5)
        return [f"stored {i}" for i in ids]


@pytest.fixture
def ingest(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Ingest]:
    fake = _Ingest()
    monkeypatch.setattr(group_commit, "ingest_many", fake)
    monkeypatch.setattr(group_commit, "GATHER", GATHER)
    monkeypatch.setattr(group_commit, "_GROUP", group_commit._Group(group_commit.LEADERS))
    yield fake
    fake.release.set()


RT = cast(Runtime, object())


def _call(resource_id: str) -> object:
    return group_commit.ingest(RT, {"id": resource_id}, "test")


def test_a_lone_caller_commits_at_once(ingest: _Ingest) -> None:
    began = time.monotonic()
    assert _call("a") == "stored a"
    assert time.monotonic() - began < GATHER / 3
    assert ingest.batches == [["a"]]


def test_callers_arriving_while_a_batch_commits_share_the_next_batch(ingest: _Ingest) -> None:
    ingest.hold = "first"
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(_call, "first")
        assert ingest.started.wait(5)
        # A batch is in flight: the next caller leads, but waits for the others first.
        later = [pool.submit(_call, f"v{i}") for i in range(5)]
        assert [f.result(5) for f in later] == [f"stored v{i}" for i in range(5)]
        ingest.release.set()
        assert first.result(5) == "stored first"
    assert ingest.batches == [["first"], [f"v{i}" for i in range(5)]]


def test_under_a_burst_every_caller_gets_its_own_answer(
    ingest: _Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "GATHER", 0.001)
    ingest.seconds = 0.005
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(_call, [f"r{i}" for i in range(2000)]))
    assert answers == [f"stored r{i}" for i in range(2000)]
    assert sorted(i for batch in ingest.batches for i in batch) == sorted(
        f"r{i}" for i in range(2000))
    assert len(ingest.batches) < 400  # batched, not one by one
    assert _call("after") == "stored after"  # the leads were all handed back


def test_a_leader_whose_version_another_batch_took_waits_without_burning_cpu(
    ingest: _Ingest,
) -> None:
    with ThreadPoolExecutor(4) as pool:
        ingest.hold = "first"
        first = pool.submit(_call, "first")
        assert ingest.started.wait(5)
        gathering = pool.submit(_call, "gathering")  # leads, waiting GATHER for company
        time.sleep(GATHER / 3)
        ingest.started.clear()
        ingest.hold = "taker"
        ingest.release.set()  # `first` commits while `gathering` still gathers
        assert first.result(5) == "stored first"
        ingest.release.clear()
        taker = pool.submit(_call, "taker")  # finds a free lead: takes `gathering` along
        assert ingest.started.wait(5)
        began = time.process_time()
        time.sleep(GATHER * 1.5)  # `gathering` has stopped gathering: its version is in flight
        burnt = time.process_time() - began
        ingest.release.set()
        assert (gathering.result(5), taker.result(5)) == ("stored gathering", "stored taker")
    assert ingest.batches == [["first"], ["gathering", "taker"]]
    assert burnt < GATHER / 3
