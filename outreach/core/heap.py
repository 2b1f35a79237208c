"""Keep what a long-running process loaded at startup out of the garbage collector's full passes.

A process that ingests (serve, poll, the HL7 listener) has ~175,000 objects from its imports, its
journey library and its runtime before it takes its first version. CPython's full collections walk
them all, every few pages of bookings, although they live as long as the process: in a 100-booking
page loop that walking was a quarter to a third of the CPU. `gc.freeze()` (after one collection,
so no garbage is kept) moves them out of the collector's view; everything made later is collected
as before."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once, after startup and before serving; the objects alive now are never scanned
    again (their memory is only freed when the process ends, as it would have been)."""
    gc.collect()
    gc.freeze()
