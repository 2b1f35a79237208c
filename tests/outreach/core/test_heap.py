"""A frozen startup heap: what was alive stays out of full collections, later garbage is still
collected (a serve or poll process does not leak what it makes after startup)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from outreach.core.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def frozen() -> Iterator[None]:
    freeze_startup_heap()
    try:
        yield
    finally:
        gc.unfreeze()


def test_startup_objects_leave_the_collectors_view(frozen: None) -> None:
    assert gc.get_freeze_count() > 1000  # imports, modules, this test session
    assert gc.isenabled()


def test_cycles_made_after_startup_are_still_collected(frozen: None) -> None:
    node = _Node()
    gone = weakref.ref(node)
    del node
    gc.collect()
    assert gone() is None
