"""What the EHR says it can do (its CapabilityStatement), read once and refreshed now and then."""

from __future__ import annotations

import time
import weakref

from connector.capabilities import Capabilities, discover
from connector.client import FhirClient

CAPABILITIES_TTL_S = 900.0
_capabilities: weakref.WeakKeyDictionary[FhirClient, tuple[float, Capabilities]] = (
    weakref.WeakKeyDictionary()
)


def capabilities(client: FhirClient) -> Capabilities:
    """The EHR's capabilities, re-read every 15 minutes (an EHR upgrade changes them)."""
    cached = _capabilities.get(client)
    if cached is None or time.monotonic() - cached[0] > CAPABILITIES_TTL_S:
        cached = (time.monotonic(), discover(client))
        _capabilities[client] = cached
    return cached[1]
