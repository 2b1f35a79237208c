"""What the EHR says it can do (its CapabilityStatement), and the polling strategy it allows."""

from __future__ import annotations

import enum
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from connector.client import FhirApi
from connector.errors import FhirUnsupported

# Search parameters every resource has in R4; servers often list them once for all types
# (`rest.searchParam`) or not at all, so a type inherits the server-wide ones.
BACKPORT_EVENTS_OPERATION = "events"


class PollStrategy(enum.StrEnum):
    LAST_UPDATED = "last-updated"   # `_lastUpdated=gt{cursor - overlap}`
    DATE_WINDOW = "date-window"     # `date=ge..&date=le..` over a sliding window


@dataclass(frozen=True, slots=True)
class ResourceSupport:
    interactions: frozenset[str] = frozenset()
    search_params: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Capabilities:
    fhir_version: str | None
    resources: dict[str, ResourceSupport] = field(default_factory=dict)
    server_search_params: frozenset[str] = frozenset()

    def supports(self, resource_type: str, interaction: str) -> bool:
        support = self.resources.get(resource_type)
        return support is not None and interaction in support.interactions

    def search_params(self, resource_type: str) -> frozenset[str]:
        support = self.resources.get(resource_type, ResourceSupport())
        return support.search_params | self.server_search_params

    def has_operation(self, resource_type: str, name: str) -> bool:
        support = self.resources.get(resource_type)
        return support is not None and name.lstrip("$") in support.operations

    def poll_strategy(self, resource_type: str) -> PollStrategy:
        """How to reconcile this type by polling; FhirUnsupported says why it cannot be."""
        if not self.supports(resource_type, "search-type"):
            raise FhirUnsupported(f"the EHR does not allow searching {resource_type}")
        params = self.search_params(resource_type)
        if "_lastUpdated" in params:
            return PollStrategy.LAST_UPDATED
        if "date" in params:
            return PollStrategy.DATE_WINDOW
        raise FhirUnsupported(
            f"the EHR can search {resource_type} by neither _lastUpdated nor date: "
            "changes to it can only arrive by subscription"
        )

    def require(self, resource_type: str, interaction: str) -> None:
        if not self.supports(resource_type, interaction):
            raise FhirUnsupported(
                f"the EHR does not support {interaction} on {resource_type} "
                "(per its CapabilityStatement)"
            )


def _names(items: list[dict[str, Any]] | None, key: str) -> frozenset[str]:
    return frozenset(str(item[key]) for item in items or [] if key in item)


def _operation_name(operation: dict[str, Any]) -> str:
    # `name` is the code without `$`; some servers put it in, some only the definition URL.
    name = str(operation.get("name") or operation.get("definition", "").rsplit("/", 1)[-1])
    return name.lstrip("$").removeprefix("Subscription-")


def parse_capabilities(statement: dict[str, Any]) -> Capabilities:
    if statement.get("resourceType") != "CapabilityStatement":
        raise FhirUnsupported("metadata did not answer a CapabilityStatement")
    server: dict[str, Any] = next(
        (r for r in statement.get("rest", []) if r.get("mode") == "server"), {}
    )
    resources = {
        str(entry["type"]): ResourceSupport(
            interactions=_names(entry.get("interaction"), "code"),
            search_params=_names(entry.get("searchParam"), "name"),
            operations=frozenset(_operation_name(op) for op in entry.get("operation", [])),
        )
        for entry in server.get("resource", [])
        if "type" in entry
    }
    return Capabilities(
        fhir_version=statement.get("fhirVersion"),
        resources=resources,
        server_search_params=_names(server.get("searchParam"), "name"),
    )


def discover(client: FhirApi) -> Capabilities:
    """Read and parse `GET [base]/metadata`."""
    return parse_capabilities(client.get("metadata"))


CAPABILITIES_TTL_S = 900.0
_cache: weakref.WeakKeyDictionary[FhirApi, tuple[float, Capabilities]] = (
    weakref.WeakKeyDictionary()
)


def capabilities(client: FhirApi) -> Capabilities:
    """The EHR's capabilities, read once per client and re-read every 15 minutes (an EHR upgrade
    changes them). A failed read is not cached: the next call asks again."""
    cached = _cache.get(client)
    if cached is None or time.monotonic() - cached[0] > CAPABILITIES_TTL_S:
        cached = (time.monotonic(), discover(client))
        _cache[client] = cached
    return cached[1]
