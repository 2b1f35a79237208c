"""CapabilityStatement discovery against the real test server, and the strategy it picks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.capabilities import (
    TOPIC_CANONICAL,
    PollStrategy,
    discover,
    parse_capabilities,
    poll_candidates,
    push_route,
)
from connector.client import FhirClient
from connector.errors import FhirUnsupported
from tests.support.fhir_server import FhirTestServer


@pytest.fixture
def client(fhir: FhirTestServer) -> Iterator[FhirClient]:
    with FhirClient(fhir.base_url) as c:
        yield c


def test_a_full_server_is_polled_by_last_updated(client: FhirClient) -> None:
    caps = discover(client)

    assert caps.fhir_version == "4.0.1"
    assert caps.supports("Appointment", "read") and caps.supports("Appointment", "search-type")
    assert {"_lastUpdated", "date", "status", "patient"} <= caps.search_params("Appointment")
    assert caps.poll_strategy("Appointment") is PollStrategy.LAST_UPDATED
    assert caps.poll_strategy("Patient") is PollStrategy.LAST_UPDATED


def test_without_last_updated_dated_types_use_a_date_window_and_others_are_refused(
    fhir: FhirTestServer, client: FhirClient
) -> None:
    fhir.features(without_search_params=["_lastUpdated"])
    caps = discover(client)

    assert caps.poll_strategy("Appointment") is PollStrategy.DATE_WINDOW
    assert caps.poll_strategy("Encounter") is PollStrategy.DATE_WINDOW
    with pytest.raises(FhirUnsupported, match="neither _lastUpdated nor date"):
        caps.poll_strategy("Patient")


def test_server_wide_search_params_and_operations_are_understood() -> None:
    caps = parse_capabilities({
        "resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
        "rest": [{
            "mode": "server",
            "searchParam": [{"name": "_lastUpdated", "type": "date"}],
            "resource": [
                {"type": "Appointment", "interaction": [{"code": "read"}]},
                {"type": "Encounter", "interaction": [{"code": "search-type"}]},
                {"type": "Subscription", "interaction": [{"code": "read"}], "operation": [
                    {"name": "events", "definition":
                     "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
                     "backport-subscription-events"}]},
            ],
        }],
    })

    assert caps.poll_strategy("Encounter") is PollStrategy.LAST_UPDATED
    assert caps.has_operation("Subscription", "$events")
    with pytest.raises(FhirUnsupported, match="does not allow searching Appointment"):
        caps.poll_strategy("Appointment")
    with pytest.raises(FhirUnsupported, match="search-type on Observation"):
        caps.require("Observation", "search-type")


def test_not_a_capability_statement_is_refused() -> None:
    with pytest.raises(FhirUnsupported):
        parse_capabilities({"resourceType": "OperationOutcome"})


def test_a_statement_listing_no_resources_is_unknown_not_cannot() -> None:
    caps = parse_capabilities({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                               "rest": [{"mode": "server"}]})
    assert caps.silent
    assert caps.supports("Communication", "create")  # unknown: worth trying
    caps.require("Subscription", "create")  # no FhirUnsupported
    assert caps.poll_strategy("Appointment") is PollStrategy.LAST_UPDATED
    assert [s for s, _ in poll_candidates(caps, "Appointment")] == [
        PollStrategy.LAST_UPDATED, PollStrategy.DATE_WINDOW]
    assert push_route(caps) == (None, "CapabilityStatement lists no resources (unknown)")
    assert not caps.has_operation("Appointment", "find")  # operations are never assumed


def test_backport_topics_are_read_from_the_subscription_entry() -> None:
    caps = parse_capabilities({"resourceType": "CapabilityStatement", "rest": [{
        "mode": "server", "resource": [{
            "type": "Subscription", "interaction": [{"code": "create"}],
            "extension": [{"url": TOPIC_CANONICAL,
                           "valueCanonical": "http://example.org/topic/appointment"}]}]}]})
    assert caps.topics == {"http://example.org/topic/appointment"}
    assert push_route(caps)[0] == "rest-hook + topic-based"


def test_transactions_and_conditional_update_are_read_and_never_guessed(
    client: FhirClient, fhir: FhirTestServer,
) -> None:
    caps = discover(client)
    assert caps.transactions
    assert caps.resources["CommunicationRequest"].conditional_update

    fhir.features(without_transactions=True)
    assert not discover(client).transactions
    fhir.features(silent_metadata=True, without_transactions=True)
    assert not discover(client).transactions  # says nothing: one request per write
