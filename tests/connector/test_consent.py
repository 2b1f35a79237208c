"""Outreach choices as FHIR Consents: the ones we write, and the ones read back from the EHR,
whoever wrote them (another system included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.consent import (
    CONTACT_EXTENSION,
    OUTREACH_CATEGORY,
    ContactChoice,
    EhrChoice,
    build_consent,
    denied_by,
    ehr_choices,
    patient_with_consents,
)
from outreach.store.consent import normalize

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MOBILE = "+15555550123"
OTHER_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.consents"  # a consent app, not us


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def consent(*, at: datetime = NOW - DAY, deny: bool = True, category: str | None = "all",
            channel: str | None = "sms", address: str | None = MOBILE, status: str = "active",
            start: str | None = "at", end: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Consent as another system would write it: LOINC category, the outreach-category coding
    (unless `category` is None), an optional contact point, a provision with a period."""
    categories: list[dict[str, Any]] = [{"coding": [{"system": "http://loinc.org",
                                                     "code": "59284-0"}]}]
    if category is not None:
        categories.append({"coding": [{"system": OUTREACH_CATEGORY, "code": category}]})
    period = {} if start is None else {"start": _instant(at) if start == "at" else start}
    if end is not None:
        period["end"] = end
    resource: dict[str, Any] = {
        "resourceType": "Consent", "status": status,
        "identifier": [{"system": OTHER_SYSTEM, "value": f"c-{at.timestamp()}"}],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": categories, "patient": {"reference": "Patient/p1"},
        "dateTime": _instant(at),
        "provision": {"type": "deny" if deny else "permit", "period": period},
    }
    if channel is not None or address is not None:
        resource["extension"] = [{"url": CONTACT_EXTENSION,
                                  "valueContactPoint": {"system": channel, "value": address}}]
    resource.update(extra)
    return resource


def choice(category: str = "all", channel: str | None = "sms", address: str | None = MOBILE,
           *, out: bool = True, at: datetime = NOW - DAY) -> EhrChoice:
    return EhrChoice(category, channel, address, out, at)


# -- what we write -----------------------------------------------------------------------------


def test_a_stop_is_an_optout_of_all_outreach_on_that_number() -> None:
    stop = ContactChoice("https://outreach.example.org/id", "consent-1", "Patient/p1", True,
                         NOW, "keyword", channel="sms", address=MOBILE)

    resource = build_consent(stop)

    assert resource["status"] == "active" and resource["patient"] == {"reference": "Patient/p1"}
    assert resource["identifier"] == [{"system": "https://outreach.example.org/id",
                                       "value": "consent-1"}]
    assert resource["policyRule"]["coding"][0]["code"] == "OPTOUT"
    assert resource["provision"] == {"type": "deny",
                                     "period": {"start": "2026-03-10T12:00:00.000Z"}}
    assert resource["dateTime"] == "2026-03-10T12:00:00.000Z"
    codings = [c for concept in resource["category"] for c in concept["coding"]]
    assert {"system": OUTREACH_CATEGORY, "code": "all"} in codings
    assert resource["extension"] == [{"url": CONTACT_EXTENSION, "valueContactPoint": {
        "system": "sms", "value": MOBILE}}]
    assert "text messages (SMS)" in resource["policyRule"]["text"]


def test_a_category_optout_names_the_category_and_no_contact_point() -> None:
    off = ContactChoice("https://outreach.example.org/id", "consent-2", "Patient/p1", True,
                        NOW, "preferences", category="surveys")

    resource = build_consent(off)

    assert "extension" not in resource
    assert resource["provision"]["type"] == "deny"
    assert resource["category"][1] == {"coding": [{"system": OUTREACH_CATEGORY,
                                                   "code": "surveys"}]}
    assert resource["policyRule"]["text"] == "opted out of surveys"


def test_an_optin_is_a_permit() -> None:
    back = ContactChoice("s", "v", "Patient/p1", False, NOW, "keyword", channel="sms",
                         address=MOBILE)
    resource = build_consent(back)
    assert resource["provision"]["type"] == "permit"
    assert resource["policyRule"]["coding"][0]["code"] == "OPTIN"


def test_what_we_write_is_read_back_as_the_same_choice() -> None:
    stop = ContactChoice("s", "v", "Patient/p1", True, NOW - DAY, "keyword", channel="sms",
                         address=MOBILE, category="campaigns")

    (read,) = ehr_choices([build_consent(stop)], NOW)

    assert read == EhrChoice("campaigns", "sms", MOBILE, True, NOW - DAY)


# -- what is read back from the EHR --------------------------------------------------------------


def test_an_active_optout_in_force_is_read() -> None:
    assert ehr_choices([consent()], NOW) == [choice()]


@pytest.mark.parametrize("other", [
    pytest.param(consent(category=None), id="no-outreach-category"),
    pytest.param(consent(category=None, channel=None, address=None,
                         scope={"coding": [{"code": "research"}]}), id="research"),
    pytest.param(consent(status="inactive"), id="inactive"),
    pytest.param(consent(status="entered-in-error"), id="entered-in-error"),
    pytest.param(consent(status="proposed"), id="proposed"),
    pytest.param(consent(end=_instant(NOW - DAY / 2)), id="period-ended"),
    pytest.param(consent(end=_instant(NOW)), id="period-ends-now"),
    pytest.param(consent(at=NOW + DAY), id="starts-tomorrow"),
    pytest.param(consent(start=_instant(NOW + DAY)), id="provision-starts-later"),
    pytest.param(consent(provision={"type": "other"}), id="provision-neither-deny-nor-permit"),
    pytest.param(consent(provision=None), id="no-provision"),
])
def test_consents_not_about_outreach_or_not_in_force_are_ignored(other: dict[str, Any]) -> None:
    assert ehr_choices([other], NOW) == []
    assert ehr_choices([other, consent(deny=False, at=NOW - 2 * DAY)], NOW) == [
        choice(out=False, at=NOW - 2 * DAY)]


def test_a_period_still_running_and_one_without_a_start_are_in_force() -> None:
    running = consent(end=_instant(NOW + DAY))
    open_start = consent(start=None, category="surveys")
    assert {c.category for c in ehr_choices([running, open_start], NOW)} == {"all", "surveys"}


def test_a_later_permit_lifts_an_earlier_deny_of_the_same_scope() -> None:
    deny = consent(at=NOW - 3 * DAY)
    permit = consent(at=NOW - DAY, deny=False)

    for order in ([deny, permit], [permit, deny]):  # the search returns them in any order
        choices = ehr_choices(order, NOW)
        assert choices == [choice(out=False)]
        assert denied_by(choices, "appointments", "sms", MOBILE) is None


def test_a_later_deny_of_all_wins_over_an_earlier_permit_of_surveys() -> None:
    choices = ehr_choices([consent(at=NOW - 3 * DAY, deny=False, category="surveys"),
                           consent(at=NOW - DAY, category="all")], NOW)

    denied = denied_by(choices, "surveys", "sms", MOBILE)

    assert denied is not None and (denied.category, denied.at) == ("all", NOW - DAY)


def test_a_later_permit_lifts_only_a_deny_it_covers_whole() -> None:
    stop = choice("all", at=NOW - 3 * DAY)  # STOP at the number: every category there
    surveys_again = choice("surveys", channel=None, address=None, out=False, at=NOW - DAY)
    assert denied_by([stop, surveys_again], "surveys", "sms", MOBILE) == stop

    no_surveys = choice("surveys", channel=None, address=None, at=NOW - 3 * DAY)
    start = choice("all", out=False, at=NOW - DAY)  # START at the number
    assert denied_by([no_surveys, start], "surveys", "sms", MOBILE) == no_surveys
    assert denied_by([no_surveys, start], "appointments", "sms", MOBILE) is None

    everything_again = choice("all", channel=None, address=None, out=False, at=NOW - DAY)
    assert denied_by([stop, everything_again], "surveys", "sms", MOBILE) is None
    assert denied_by([no_surveys, everything_again], "surveys", "email", "a@b.org") is None


def test_a_permit_of_surveys_leaves_a_deny_of_all_outreach_in_force() -> None:
    choices = ehr_choices([consent(at=NOW - 3 * DAY, category="all"),
                           consent(at=NOW - DAY, deny=False, category="surveys")], NOW)

    assert denied_by(choices, "surveys", "sms", MOBILE) is not None
    assert denied_by(choices, "appointments", "sms", MOBILE) is not None


def test_a_permit_as_old_as_the_deny_does_not_lift_it() -> None:
    deny = choice("surveys", at=NOW - DAY)
    permit = choice("all", channel=None, address=None, out=False, at=NOW - DAY)
    assert denied_by([permit, deny], "surveys", "sms", MOBILE) == deny


@pytest.mark.parametrize("bad", [
    pytest.param({"dateTime": "yesterday"}, id="dateTime-words"),
    pytest.param({"dateTime": "2026-02-30T10:00:00Z"}, id="dateTime-no-such-day"),
    pytest.param({"dateTime": 20260301}, id="dateTime-number"),
    pytest.param({"provision": {"type": "deny", "period": {"start": "soon"}}}, id="start-words"),
    pytest.param({"provision": {"type": "deny", "period": {"end": "2026-99-01"}}}, id="end-bad"),
])
def test_malformed_dates_do_not_raise(bad: dict[str, Any]) -> None:
    choices = ehr_choices([consent(**bad), consent(category="surveys")], NOW)
    assert choice("surveys") in choices  # the well-formed one is still read


def test_a_consent_without_a_datetime_is_not_read() -> None:
    undated = consent()
    del undated["dateTime"]
    assert ehr_choices([undated], NOW) == []


def test_date_only_values_are_read() -> None:
    dated = consent(dateTime="2026-03-01", provision={"type": "deny",
                                                      "period": {"start": "2026-03-01"}})
    assert ehr_choices([dated], NOW) == [choice(at=datetime(2026, 3, 1, tzinfo=UTC))]


def test_a_phone_contact_point_is_the_sms_channel() -> None:
    (read,) = ehr_choices([consent(channel="phone")], NOW)
    assert read.channel == "sms"


def test_addresses_are_compared_in_one_spelling() -> None:
    written = [consent(address="+1 (555) 555-0123"),
               consent(channel="email", address="Pat@Example.ORG ", category="surveys")]

    choices = ehr_choices(written, NOW, normalize)

    assert denied_by(choices, "appointments", "sms", MOBILE) is not None
    assert denied_by(choices, "surveys", "email", "pat@example.org") is not None


# -- which choice covers a message ---------------------------------------------------------------


@pytest.mark.parametrize(("held", "category", "channel", "address", "denied"), [
    (choice("all"), "appointments", "sms", MOBILE, True),
    (choice("all"), "campaigns", "sms", MOBILE, True),
    (choice("surveys"), "surveys", "sms", MOBILE, True),
    (choice("surveys"), "appointments", "sms", MOBILE, False),
    (choice("all", channel=None, address=None), "appointments", "email", "pat@example.org", True),
    (choice("all", channel="sms", address=None), "appointments", "sms", "+15555550999", True),
    (choice("all", channel="sms", address=None), "appointments", "email", "pat@example.org",
     False),
    (choice("all"), "appointments", "sms", "+15555550999", False),
    (choice("all"), "appointments", "email", MOBILE, False),
    (choice("all", out=False), "appointments", "sms", MOBILE, False),
], ids=["all-covers-appointments", "all-covers-campaigns", "same-category",
        "other-category", "any-channel", "any-sms-number", "sms-only-not-email",
        "other-number", "other-channel", "permit"])
def test_denied_by_covering_rules(held: EhrChoice, category: str, channel: str, address: str,
                                  denied: bool) -> None:
    assert (denied_by([held], category, channel, address) == held) is denied


def test_denied_by_nothing_is_none() -> None:
    assert denied_by([], "appointments", "sms", MOBILE) is None


def test_a_later_deny_holds_over_an_earlier_wider_permit() -> None:
    narrow_deny = choice("appointments", at=NOW - DAY)
    wide_permit = choice("all", channel=None, address=None, out=False, at=NOW - 2 * DAY)
    assert denied_by([wide_permit, narrow_deny], "appointments", "sms", MOBILE) == narrow_deny
    later_permit = choice("all", channel="sms", address=None, out=False, at=NOW)
    assert denied_by([narrow_deny, later_permit], "appointments", "sms", MOBILE) is None


def test_of_several_denies_in_force_the_latest_is_named() -> None:
    older, newer = choice("all", at=NOW - 3 * DAY), choice("appointments", at=NOW - DAY)
    assert denied_by([newer, older], "appointments", "sms", MOBILE) == newer


# -- the searchset -------------------------------------------------------------------------------


def test_patient_with_consents_splits_the_revinclude_searchset() -> None:
    pat = {"resourceType": "Patient", "id": "p1"}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": consent(), "search": {"mode": "include"}},
        {"resource": pat, "search": {"mode": "match"}},
        {"resource": consent(category="surveys"), "search": {"mode": "include"}},
        {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
    ]}

    patient, consents = patient_with_consents(bundle)

    assert patient == pat
    assert [c["category"][1]["coding"][0]["code"] for c in consents] == ["all", "surveys"]


def test_patient_with_consents_of_an_empty_searchset_is_no_patient() -> None:
    assert patient_with_consents({"resourceType": "Bundle", "type": "searchset",
                                  "total": 0}) == (None, [])
