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
    conditional_update: bool = False  # `PUT [type]?[search]`: update the one match, or create


@dataclass(frozen=True, slots=True)
class Capabilities:
    fhir_version: str | None
    resources: dict[str, ResourceSupport] = field(default_factory=dict)
    server_search_params: frozenset[str] = frozenset()

    topics: frozenset[str] = frozenset()  # Backport IG topic canonicals the server advertises
    # Whole-system interactions (`rest.interaction`): `transaction`, `batch`, `search-system`.
    system_interactions: frozenset[str] = frozenset()

    @property
    def transactions(self) -> bool:
        """Listed, not guessed: a silent statement gets one request per write (always right)."""
        return "transaction" in self.system_interactions

    @property
    def silent(self) -> bool:
        """The statement lists no resources at all: it says nothing, which is not "cannot".
        Everything is then tried, and a failure is reported as what it is."""
        return not self.resources

    def supports(self, resource_type: str, interaction: str) -> bool:
        """Listed, or not known either way (a silent statement): worth trying."""
        if self.silent:
            return True
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
        if "_lastUpdated" in params or self.silent:  # silent: try the cheap search first
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


TOPIC_CANONICAL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)


def _topics(server: dict[str, Any]) -> frozenset[str]:
    """Backport IG: topics are advertised by an extension on the Subscription resource entry
    (some servers put it on `rest` itself)."""
    holders = [server, *(r for r in server.get("resource", []) if r.get("type") == "Subscription")]
    return frozenset(
        str(ext["valueCanonical"]) for holder in holders for ext in holder.get("extension", [])
        if ext.get("url") == TOPIC_CANONICAL and ext.get("valueCanonical")
    )


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
            conditional_update=entry.get("conditionalUpdate") is True,
        )
        for entry in server.get("resource", [])
        if "type" in entry
    }
    return Capabilities(
        fhir_version=statement.get("fhirVersion"),
        resources=resources,
        server_search_params=_names(server.get("searchParam"), "name"),
        topics=_topics(server),
        system_interactions=_names(server.get("interaction"), "code"),
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


def push_route(caps: Capabilities) -> tuple[str | None, str]:
    """How the EHR can push changes ("rest-hook", "rest-hook + topic-based" or None), and the
    CapabilityStatement's reason. A silent statement names nothing: the caller probes."""
    if caps.silent:
        return None, "CapabilityStatement lists no resources (unknown)"
    if not caps.supports("Subscription", "create"):
        return None, "CapabilityStatement: no Subscription resource (or no create on it)"
    if caps.topics:
        return "rest-hook + topic-based", (
            f"CapabilityStatement: Subscription create listed, {len(caps.topics)} "
            "Backport IG topic(s) advertised")
    return "rest-hook", "CapabilityStatement: Subscription create listed"


def poll_candidates(caps: Capabilities, resource_type: str) -> list[tuple[PollStrategy, str]]:
    """The polling strategies to try for this type, best first, each with the statement's
    reason; a silent statement offers both, to be probed."""
    if caps.silent:
        why = "CapabilityStatement lists no resources (unknown)"
        return [(PollStrategy.LAST_UPDATED, why), (PollStrategy.DATE_WINDOW, why)]
    if not caps.supports(resource_type, "search-type"):
        return []
    params = caps.search_params(resource_type)
    found = []
    for strategy, param in ((PollStrategy.LAST_UPDATED, "_lastUpdated"),
                            (PollStrategy.DATE_WINDOW, "date")):
        if param in params:
            found.append((strategy, f"CapabilityStatement: {resource_type} search-type lists "
                                    f"{param}"))
    return found
