"""Reading a patient's reply: opt-out words first, then the step's replies, then scores."""

from __future__ import annotations

import pytest

from channels.inbound import classify


@pytest.mark.parametrize("body", ["STOP", "stop", " Stop. ", "STOPALL", "unsubscribe", "Cancel",
                                  "END", "quit", "REVOKE", "OPTOUT", "opt-out"])
def test_opt_out_words(body: str) -> None:
    assert classify(body).intent == "stop"


def test_stop_wins_over_a_journey_reply_using_the_same_word() -> None:
    assert classify("CANCEL", {"CANCEL": "cancel"}).intent == "stop"


@pytest.mark.parametrize("body", ["START", "unstop", "Yes"])
def test_opt_in_words(body: str) -> None:
    assert classify(body).intent == "start"


def test_journey_replies_map_keys_to_actions() -> None:
    replies = {"C": "confirm", "X": "cancel", "D": "cancel-appointment"}
    assert classify(" c ", replies).intent == "confirm"
    assert (classify("x", replies).intent, classify("x", replies).action) == ("cancel", "cancel")
    reply = classify("D", replies)
    assert (reply.intent, reply.action) == ("cancel", "cancel-appointment")
    assert classify("C").intent == "text"  # no replies declared: free text


def test_scores_only_where_the_step_asks_for_one() -> None:
    survey = {"score": "score"}
    assert (classify("9", survey).intent, classify("9", survey).score) == ("score", 9)
    assert classify("10", survey).score == 10
    assert classify("11", survey).intent == "text"
    assert classify("9").intent == "text"


def test_anything_else_is_free_text() -> None:
    assert classify("Can I come at 3 instead?", {"C": "confirm"}).intent == "text"
