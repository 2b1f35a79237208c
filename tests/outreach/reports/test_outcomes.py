"""The outcome report's arithmetic, against docs/metrics.md, on facts built by hand (pure)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from outreach.reports.facts import AppointmentFacts, Message, ReplyFact, ScoreFact, SentFact
from outreach.reports.outcomes import (
    BREAKDOWN_COLUMNS,
    DIMENSIONS,
    Period,
    Pricing,
    UnknownFilter,
    apply_filters,
    breakdown,
    counts,
    messages,
    report,
    surveys,
)
from outreach.reports.render import as_csv, as_table
from rules.loader import JourneySet, parse_journey

START = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
PERIOD = Period(date(2026, 3, 9), date(2026, 3, 15))
PRICING = Pricing(0.0083, "USD")
NO_JOURNEYS = JourneySet()
ZERO_FIGURES = {
    "appointments": 0, "reached": 0, "unreached": 0, "confirmed": 0, "cancelled": 0,
    "cancelled_by_patient": 0, "cancel_requests_by_reply": 0, "fulfilled": 0, "no_show": 0,
    "no_show_rate": None, "confirmation_rate": None, "response_rate": None, "opt_outs": 0,
    "opt_out_rate": None,
}


def msg(channel: str = "sms", *, step: str = "reminder-72h", journey: str = "reminders",
        failed: bool = False, language: str | None = "en", minutes: int = 0,
        segments: int = 1) -> Message:
    """A message about an appointment: the last attempt of one step."""
    return Message(journey, step, channel, language, START - timedelta(days=3, minutes=-minutes),
                   delivered=None, failed=failed, error_code="30006" if failed else None,
                   segments=segments if channel == "sms" else 0)


def said(intent: str, *, step: str = "reminder-72h", journey: str = "reminders",
         score: int | None = None) -> ReplyFact:
    return ReplyFact(journey, step, intent, score)


def appt(name: str, status: str = "booked", *, sent: Sequence[Message] = (),
         replies: Sequence[ReplyFact] = (), journeys: Iterable[str] = ("reminders",),
         cancelled_by: str | None = None, location: str = "Main Street Clinic",
         practitioner: str = "unknown", service_type: str = "checkup",
         skipped: Sequence[str] = ()) -> AppointmentFacts:
    return AppointmentFacts(
        f"Appointment/{name}", f"Patient/{name}", START, status, cancelled_by, location,
        practitioner, service_type, set(journeys), list(sent), list(replies), list(skipped))


def full_report(facts: list[AppointmentFacts], sent: list[SentFact] | None = None,
                scores: list[ScoreFact] | None = None, journeys: JourneySet = NO_JOURNEYS,
                filters: dict[str, str] | None = None) -> dict[str, Any]:
    return report(PERIOD, "UTC", facts, sent or [], scores or [], journeys, PRICING,
                  filters or {}, 6)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in ZERO_FIGURES}


# --- the population and the headline figures -------------------------------------------------


def test_an_empty_period_is_zeros_and_null_rates_not_an_error() -> None:
    result = full_report([])
    assert headline(result) == ZERO_FIGURES
    assert result["period"] == {"from": "2026-03-09", "to": "2026-03-15", "timezone": "UTC"}
    assert result["reached_vs_unreached"] == {"reached": ZERO_FIGURES,
                                              "unreached": ZERO_FIGURES}
    assert result["unreached_reasons"] == {}
    assert (result["messages"], result["segments"], result["cost"]["amount"]) == ({}, 0, 0)
    assert result["messages_per_day"] == [] and result["delivery_failures"] == {}
    assert result["surveys"] == {"answers": 0, "distribution": {}, "nps": None,
                                 "service_recovery_tasks": 0}
    assert all(result[f"by_{d}"] == {} for d in DIMENSIONS)
    assert "no-show rate" in as_table(result) and "—" in as_table(result)
    assert as_csv(result).splitlines()[1] == "all,all,0,0,0,0,0,0,,"


def test_every_headline_figure_follows_its_definition() -> None:
    facts = [
        # reached, confirmed, then fulfilled
        appt("ana", "fulfilled", sent=[msg()], replies=[said("confirm")]),
        # reached, no reply, missed the visit
        appt("ben", "noshow", sent=[msg(), msg(step="booked")]),
        # reached by email, arrived (counts as fulfilled)
        appt("cara", "arrived", sent=[msg("email")]),
        # no message at all: unreached, missed the visit
        appt("dan", "noshow", skipped=["no channel the recipient can receive"]),
        # reached, asked by reply to cancel; the clinic cancelled it (reason unknown)
        appt("eve", "cancelled", sent=[msg()], replies=[said("cancel")], cancelled_by="unknown"),
        # reached, opted out; still booked: in neither fulfilled nor no-show
        appt("fay", "booked", sent=[msg()], replies=[said("stop")]),
        # reached, a reply with nothing to read; checked in
        appt("gus", "checked-in", sent=[msg()], replies=[said("empty")]),
        # cancelled by the clinic: cancelled, not by the patient
        appt("hal", "cancelled", sent=[msg()], cancelled_by="clinic"),
        # the patient cancelled at the desk (cancelationReason pat), no reply
        appt("ivy", "cancelled", cancelled_by="patient"),
        # asked to cancel by reply; staff have not cancelled it yet
        appt("jo", "booked", sent=[msg()], replies=[said("cancel")]),
    ]
    reached, fulfilled, no_show = 8, 3, 2
    assert counts(facts) == {
        "appointments": 10, "reached": reached, "unreached": 2,
        "confirmed": 1, "cancelled": 3, "cancelled_by_patient": 2,
        "cancel_requests_by_reply": 2, "fulfilled": fulfilled, "no_show": no_show,
        "no_show_rate": round(no_show / (no_show + fulfilled), 4),
        "confirmation_rate": round(1 / reached, 4),
        "response_rate": round(4 / reached, 4),  # ana, eve, fay, jo; gus's was empty
        "opt_outs": 1, "opt_out_rate": round(1 / reached, 4),
    }


def test_no_show_rate_is_over_recorded_outcomes_only() -> None:
    booked = [appt(f"b{i}") for i in range(5)]
    assert counts(booked)["no_show_rate"] is None  # nothing recorded yet: no rate, no error
    facts = [*booked, appt("x", "noshow"), appt("y", "fulfilled"), appt("z", "arrived"),
             appt("w", "checked-in")]
    figures = counts(facts)
    assert (figures["fulfilled"], figures["no_show"]) == (3, 1)
    assert figures["no_show_rate"] == 0.25  # 1 / (1 + 3): the booked ones count in neither
    assert counts([appt("x", "noshow")])["no_show_rate"] == 1.0
    assert counts([appt("y", "fulfilled")])["no_show_rate"] == 0.0


@pytest.mark.parametrize(("sent", "reached", "channels"), [
    ([msg("email", step="booked", failed=True), msg("sms")], True, {"sms"}),
    ([msg("sms", failed=True), msg("email", step="booked")], True, {"email"}),
    ([msg("sms", failed=True), msg("email", step="booked", failed=True)], False, set()),
    ([msg("sms"), msg("email", step="booked")], True, {"sms", "email"}),
    ([], False, set()),
])
def test_reached_means_some_message_did_not_fail(
    sent: list[Message], reached: bool, channels: set[str]
) -> None:
    facts = appt("a", sent=sent)
    assert (facts.reached, facts.channels) == (reached, channels)
    figures = counts([facts])
    assert (figures["reached"], figures["unreached"]) == (int(reached), int(not reached))
    assert figures["confirmation_rate"] == (0.0 if reached else None)


def test_cancelled_by_patient_by_reason_pat_or_by_a_cancel_reply() -> None:
    by_reason = appt("a", "cancelled", cancelled_by="patient")
    by_reply = appt("b", "cancelled", sent=[msg()], replies=[said("cancel")],
                    cancelled_by="clinic")
    by_clinic = appt("c", "cancelled", sent=[msg()], cancelled_by="clinic")
    asked_only = appt("d", "booked", sent=[msg()], replies=[said("cancel")])
    for facts, cancelled, by_patient, requests in [
        (by_reason, 1, 1, 0), (by_reply, 1, 1, 1), (by_clinic, 1, 0, 0), (asked_only, 0, 0, 1),
    ]:
        figures = counts([facts])
        assert (figures["cancelled"], figures["cancelled_by_patient"],
                figures["cancel_requests_by_reply"]) == (cancelled, by_patient, requests), facts
    assert counts([by_reason, by_reply, by_clinic, asked_only])["cancelled_by_patient"] == 2


def test_confirmations_and_opt_outs_count_only_among_the_reached() -> None:
    # The only message was refused, yet a reply arrived (from an earlier thread): not reached,
    # so not a confirmation of this outreach; the rates stay over the reached.
    facts = [appt("a", sent=[msg(failed=True)], replies=[said("confirm"), said("stop")]),
             appt("b", sent=[msg()], replies=[said("confirm")])]
    figures = counts(facts)
    assert (figures["reached"], figures["confirmed"], figures["opt_outs"]) == (1, 1, 0)
    assert figures["confirmation_rate"] == 1.0 and figures["response_rate"] == 1.0


# --- reached versus unreached, and why ---------------------------------------------------------


def test_reached_and_unreached_side_by_side_with_the_reasons() -> None:
    facts = [appt("a", "fulfilled", sent=[msg()]), appt("b", "noshow", sent=[msg()]),
             appt("c", "fulfilled", sent=[msg()]),
             appt("d", "noshow", skipped=["no channel the recipient can receive"]),
             appt("e", "noshow", skipped=["opted out of sms", "opted out of sms"]),
             appt("f", "booked", sent=[msg(failed=True)],
                  skipped=["no channel the recipient can receive"]),
             appt("g", "fulfilled")]
    result = full_report(facts)
    side = result["reached_vs_unreached"]
    assert (side["reached"]["appointments"], side["reached"]["no_show_rate"]) == (3, 0.3333)
    assert (side["unreached"]["appointments"], side["unreached"]["no_show"],
            side["unreached"]["fulfilled"], side["unreached"]["no_show_rate"]) == (4, 2, 1, 0.6667)
    assert result["unreached_reasons"] == {  # each appointment once per reason
        "no channel the recipient can receive": 2, "opted out of sms": 1, "not sent yet": 1}


# --- breakdowns and filters ---------------------------------------------------------------------


def test_an_appointment_in_two_journeys_counts_in_both() -> None:
    both = appt("a", "noshow", sent=[msg(), msg(journey="recall", step="invite")],
                journeys=("reminders", "recall"))
    only = appt("b", "fulfilled", sent=[msg()], replies=[said("confirm")])
    by_journey = breakdown([both, only], "journey")
    assert list(by_journey) == ["recall", "reminders"]
    assert by_journey["recall"]["appointments"] == 1 and by_journey["recall"]["no_show"] == 1
    assert by_journey["reminders"]["appointments"] == 2
    assert by_journey["reminders"]["no_show_rate"] == 0.5
    assert by_journey["reminders"]["confirmed"] == 1 and by_journey["recall"]["confirmed"] == 0
    assert counts([both, only])["appointments"] == 2  # the total counts it once
    assert set(breakdown([both, only], "step")) == {"recall/invite", "reminders/reminder-72h"}


def test_every_breakdown_groups_as_documented() -> None:
    two_channels = appt("a", sent=[msg("sms", language="es"),
                                   msg("email", step="booked", minutes=-60, language="en")],
                        location="Annex", practitioner="Dr Who", service_type="dental")
    unreached = appt("b", sent=[msg("sms", failed=True, language=None)])
    nothing = appt("c")
    result = full_report([two_channels, unreached, nothing])
    assert {k: v["appointments"] for k, v in result["by_channel"].items()} == {
        "email": 1, "none": 2, "sms": 1}
    assert {k: v["appointments"] for k, v in result["by_step"].items()} == {
        "none sent": 1, "reminders/booked": 1, "reminders/reminder-72h": 2}
    # the language of the first message (the email, an hour earlier); unknown when none
    assert {k: v["appointments"] for k, v in result["by_language"].items()} == {
        "en": 1, "unknown": 2}
    assert list(result["by_location"]) == ["Annex", "Main Street Clinic"]
    assert list(result["by_practitioner"]) == ["Dr Who", "unknown"]
    assert {k: v["appointments"] for k, v in result["by_service_type"].items()} == {
        "checkup": 2, "dental": 1}


def _population() -> list[AppointmentFacts]:
    return [appt("a", "fulfilled", sent=[msg()], replies=[said("confirm")]),
            appt("b", "noshow", sent=[msg("email")]),
            appt("c", "noshow", journeys=("recall",), service_type="dental"),
            appt("d", "fulfilled", sent=[msg(journey="recall", step="invite")],
                 journeys=("recall", "reminders"), service_type="dental")]


def test_filters_narrow_the_population_and_combine() -> None:
    facts = _population()
    assert [f.reference for f in apply_filters(facts, {"journey": "recall"})] == [
        "Appointment/c", "Appointment/d"]
    assert [f.reference for f in apply_filters(
        facts, {"journey": "reminders", "service_type": "dental"})] == ["Appointment/d"]
    assert [f.reference for f in apply_filters(facts, {"channel": "none"})] == ["Appointment/c"]
    result = full_report(facts, filters={"channel": "sms"})
    assert result["filters"] == {"channel": "sms"}
    assert (result["appointments"], result["reached"], result["confirmed"],
            result["no_show_rate"]) == (2, 2, 1, 0.0)
    assert list(result["by_journey"]) == ["recall", "reminders"]
    assert apply_filters(facts, {}) == facts


def test_an_unknown_filter_value_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(UnknownFilter) as caught:
        apply_filters(_population(), {"journey": "nope"})
    assert caught.value.dimension == "journey"
    assert caught.value.allowed == ["recall", "reminders"]
    assert str(caught.value) == "unknown journey 'nope'; in this period: recall, reminders"
    with pytest.raises(UnknownFilter) as caught:
        apply_filters(_population(), {"colour": "red"})
    assert caught.value.allowed == list(DIMENSIONS)
    assert "unknown filter 'colour'" in str(caught.value)
    with pytest.raises(UnknownFilter, match="in this period: none"):
        full_report([], filters={"journey": "reminders"})


# --- surveys ------------------------------------------------------------------------------------

SURVEYS = """
journey: surveys
trigger: {resource: Encounter, on: [created]}
anchor: period.end
steps:
  - {id: five, at: "+1d", channel: [sms], template: satisfaction-survey,
     survey: {min: 1, max: 5, low_at_most: 2}}
  - {id: ten, at: "+2d", channel: [sms], template: satisfaction-survey,
     survey: {min: 0, max: 10, low_at_most: 6}}
"""


@pytest.fixture(scope="module")
def survey_journeys() -> JourneySet:
    return JourneySet([parse_journey(SURVEYS, "surveys.yaml")])


def test_nps_style_on_a_one_to_five_scale(survey_journeys: JourneySet) -> None:
    # on 0-10: 5 → 10, 4 → 7.5, 2 → 2.5: promoters 5,5,5; passive 4; detractor 2
    scores = [ScoreFact("surveys", "five", s) for s in (5, 5, 5, 4, 2)]
    assert surveys(scores, survey_journeys, 6) == {
        "answers": 5, "distribution": {"2/5": 1, "4/5": 1, "5/5": 3},
        "nps": 40.0,  # 100 × (3 − 1) / 5
        "service_recovery_tasks": 1,  # at or below the step's low_at_most (2)
    }


def test_nps_style_on_a_zero_to_ten_scale(survey_journeys: JourneySet) -> None:
    scores = [ScoreFact("surveys", "ten", s) for s in (10, 8, 6, 0)]
    assert surveys(scores, survey_journeys, 3) == {
        "answers": 4, "distribution": {"0/10": 1, "6/10": 1, "8/10": 1, "10/10": 1},
        "nps": -25.0,  # 100 × (1 − 2) / 4
        "service_recovery_tasks": 2,  # 6 and 0 (the step's low_at_most, not the default 3)
    }


def test_scales_mix_and_a_step_no_longer_loaded_reads_as_zero_to_ten(
    survey_journeys: JourneySet
) -> None:
    scores = [ScoreFact("surveys", "five", 5), ScoreFact("surveys", "ten", 9),
              ScoreFact("gone", "survey", 3)]  # no survey spec: 0-10, the default low (6)
    result = surveys(scores, survey_journeys, 6)
    assert result["distribution"] == {"5/5": 1, "3/10": 1, "9/10": 1}
    assert result["nps"] == round(100 * (2 - 1) / 3, 1)
    assert result["service_recovery_tasks"] == 1
    assert full_report([], scores=scores, journeys=survey_journeys)["surveys"] == result


# --- messages, segments, cost -------------------------------------------------------------------


def test_volumes_segments_and_cost() -> None:
    sent = [SentFact("2026-03-09", "sms", 1, True, False, None),
            SentFact("2026-03-09", "sms", 3, True, False, None),
            SentFact("2026-03-09", "email", 0, True, False, None),
            SentFact("2026-03-10", "sms", 2, True, True, "30006"),  # accepted, undelivered
            SentFact("2026-03-10", "sms", 0, False, True, "21211"),  # refused: not a message
            SentFact("2026-03-10", "email", 0, False, True, None)]
    result = messages(sent, Pricing(0.01, "EUR"))
    assert result["messages"] == {"email": 1, "sms": 3}
    assert result["segments"] == 6
    assert result["cost"] == {"amount": 0.06, "currency": "EUR", "price_per_segment": 0.01}
    assert result["messages_per_day"] == [
        {"day": "2026-03-09", "channel": "email", "messages": 1, "segments": 0, "cost": 0.0},
        {"day": "2026-03-09", "channel": "sms", "messages": 2, "segments": 4, "cost": 0.04},
        {"day": "2026-03-10", "channel": "sms", "messages": 1, "segments": 2, "cost": 0.02},
    ]
    assert result["delivery_failures"] == {"email no code": 1, "sms 21211": 1, "sms 30006": 1}
    assert messages(sent, PRICING)["cost"]["amount"] == round(6 * 0.0083, 4)


def test_messages_count_every_message_of_the_period_not_only_those_about_a() -> None:
    sent = [SentFact("2026-03-09", "sms", 2, True, False, None)]
    result = full_report([], sent=sent)
    assert result["appointments"] == 0
    assert (result["messages"], result["segments"]) == ({"sms": 1}, 2)


# --- rendering ----------------------------------------------------------------------------------


def test_table_and_csv_show_the_headline_and_the_breakdowns() -> None:
    sent = [SentFact("2026-03-09", "sms", 2, True, False, None)]
    result = full_report(_population(), sent=sent)
    table = as_table(result)
    assert table.startswith("Outcomes for appointments from 2026-03-09 to 2026-03-15 (UTC)")
    lines = table.splitlines()
    assert any(line.startswith("appointments (start in the period") and line.endswith(" 4")
               for line in lines)
    assert any(line.startswith("no-show rate") and line.endswith("50.0%") for line in lines)
    assert "messages: 1 sms; SMS segments: 2 (≈ 0.02 USD)" in table
    assert any(line.startswith("recall ") for line in lines)  # the by-journey table

    rows = list(csv.reader(io.StringIO(as_csv(result))))
    assert rows[0] == ["dimension", "value", *BREAKDOWN_COLUMNS]
    assert rows[1] == ["all", "all", "4", "3", "1", "0", "2", "2", "0.5", "0.3333"]
    by_journey = {row[1]: row for row in rows if row[0] == "journey"}
    assert by_journey["recall"][2:] == ["2", "1", "0", "0", "1", "1", "0.5", "0.0"]
    assert {row[0] for row in rows[1:]} == {"all", *DIMENSIONS}
