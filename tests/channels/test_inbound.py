"""Reading a patient's reply in their own words: every shipped phrase lands on its intent, opt-out
words win, YES means confirm unless the number is opted out, ambiguity goes to staff."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.inbound import Phrasebook, classify, load_phrasebook, normalize, phrasebooks

REMINDER = {"C": "confirm", "X": "cancel"}
BOOKS = phrasebooks()


def _phrases(*names: str) -> list[tuple[str, str]]:
    return [(book.language, phrase) for book in BOOKS for name in names
            for phrase in getattr(book, name)]


def _said_in(phrase: str, *names: str) -> str:
    """The language a phrase is attributed to: the first book that has it (English first)."""
    return next(lang for lang, p in _phrases(*names) if p == phrase)


def test_english_and_spanish_are_shipped() -> None:
    assert [book.language for book in BOOKS][:1] == ["en"]
    assert {"en", "es"} <= {book.language for book in BOOKS}


@pytest.mark.parametrize(("language", "phrase"),
                         _phrases("opt_out_anywhere", "opt_out_whole", "opt_out_phrases"))
def test_every_opt_out_phrase_opts_out(language: str, phrase: str) -> None:
    reply = classify(phrase, REMINDER)
    lists = ("opt_out_anywhere", "opt_out_whole", "opt_out_phrases")
    assert (reply.intent, reply.language) == ("stop", _said_in(phrase, *lists))


@pytest.mark.parametrize(("language", "phrase"), _phrases("opt_out_anywhere", "opt_out_phrases"))
def test_an_opt_out_inside_a_sentence_still_opts_out(language: str, phrase: str) -> None:
    assert classify(f"ok thanks but {phrase} now please", REMINDER).intent == "stop"


@pytest.mark.parametrize(("language", "phrase"), _phrases("opt_in_whole"))
def test_every_opt_in_word_opts_in(language: str, phrase: str) -> None:
    assert classify(phrase, REMINDER).intent == "start"


@pytest.mark.parametrize(("language", "phrase"), _phrases("help_whole"))
def test_every_help_word_asks_for_help(language: str, phrase: str) -> None:
    assert classify(phrase, REMINDER).intent == "help"


@pytest.mark.parametrize(("language", "phrase"), _phrases("confirm_whole", "confirm_phrases"))
def test_every_confirmation_confirms_where_the_step_asks_for_one(language: str,
                                                                 phrase: str) -> None:
    reply = classify(phrase, REMINDER)
    said_in = _said_in(phrase, "confirm_whole", "confirm_phrases")
    assert (reply.intent, reply.action, reply.language) == ("confirm", "confirm", said_in)


@pytest.mark.parametrize(("language", "phrase"), _phrases("cancel_phrases"))
def test_every_cancellation_asks_to_cancel_and_is_no_opt_out(language: str, phrase: str) -> None:
    reply = classify(phrase, REMINDER)
    assert (reply.intent, reply.action) == ("cancel", "cancel")


@pytest.mark.parametrize(("language", "phrase"), _phrases("reschedule_phrases"))
def test_every_reschedule_phrase_asks_for_another_time(language: str, phrase: str) -> None:
    reply = classify(phrase, REMINDER)
    assert (reply.intent, reply.action) == ("reschedule", "reschedule")


def test_stop_wins_over_a_journey_reply_using_the_same_word() -> None:
    assert classify("CANCEL", {"CANCEL": "cancel"}).intent == "stop"


@pytest.mark.parametrize("body", ["STOP", "stop", " Stop. ", "STOPALL", "unsubscribe", "Cancel",
                                  "END", "quit", "REVOKE", "OPTOUT", "opt-out", "Opt Out!"])
def test_the_fcc_and_carrier_words(body: str) -> None:
    assert classify(body).intent == "stop"


def test_words_holding_an_opt_out_word_that_mean_something_else() -> None:
    assert classify("I will stop by the front desk first").intent == "text"
    assert classify("see you at the end of the day", REMINDER).intent == "text"
    assert classify("I have to cancel my appointment", REMINDER).intent == "cancel"


def test_yes_confirms_and_resubscribes_only_an_opted_out_number() -> None:
    assert classify("Yes", REMINDER).intent == "confirm"
    reply = classify("Yes", REMINDER, opted_out=True)
    assert reply.intent == "start"
    assert reply.rule == "'yes' from an opted-out number re-subscribes it"
    # A yes to a message that asked for nothing is not guessed: staff read it.
    assert classify("yes").intent == "text"


def test_journey_replies_map_keys_to_actions() -> None:
    replies = {"C": "confirm", "X": "cancel", "D": "cancel-appointment", "R": "reschedule"}
    assert classify(" c ", replies).intent == "confirm"
    assert (classify("x", replies).intent, classify("x", replies).action) == ("cancel", "cancel")
    reply = classify("D", replies)
    assert (reply.intent, reply.action, reply.rule) == (
        "cancel", "cancel-appointment", "the step's reply key 'D'")
    assert classify("r", replies).intent == "reschedule"
    assert classify("C").intent == "text"  # no replies declared: free text


def test_a_cancellation_in_words_cancels_in_the_ehr_only_where_the_journey_says_so() -> None:
    assert classify("I can't make it", {"D": "cancel-appointment"}).action == "cancel-appointment"
    assert classify("I can't make it", {"C": "confirm"}).action == "cancel"  # staff are asked


def test_scores_only_where_the_step_asks_for_one() -> None:
    survey = {"score": "score"}
    assert (classify("9", survey).intent, classify("9", survey).score) == ("score", 9)
    assert classify("10", survey).score == 10
    assert classify("8/10", survey).score == 8
    assert classify("7 de 10", survey).score == 7
    assert classify("11", survey).intent == "text"
    assert classify("9").intent == "text"
    assert classify("3", None, (1, 5)).score == 3


def test_two_meanings_at_once_go_to_staff() -> None:
    reply = classify("yes I'll be there, or can we reschedule?", REMINDER)
    assert reply.intent == "text" and reply.rule.startswith("ambiguous: confirm")


def test_cancel_and_find_another_time_is_a_reschedule() -> None:
    assert classify("cancel my appointment and find me another day", REMINDER).intent == \
        "reschedule"


@pytest.mark.parametrize("body", ["", "   ", "🙂🙂", "...", "\u200b"])
def test_nothing_to_read_is_empty_not_a_guess(body: str) -> None:
    assert classify(body, REMINDER).intent == "empty"


def test_thumbs_up_is_yes() -> None:
    assert classify("👍", REMINDER).intent == "confirm"


def test_a_very_long_reply_is_read_up_to_one_concatenated_sms() -> None:
    assert classify("x" * 5000 + " stop", REMINDER).intent == "text"
    assert classify("please " * 240 + "stop", REMINDER).intent == "text"  # past 1,600 characters
    assert classify("please " * 100 + "stop", REMINDER).intent == "stop"


def test_mixed_languages() -> None:
    assert classify("Sí, I'll be there", REMINDER).intent == "confirm"
    assert classify("gracias, but stop please", REMINDER).intent == "stop"


def test_normalize_drops_accents_apostrophes_and_punctuation() -> None:
    assert normalize("¡Sí, ahí ESTARÉ!") == "si ahi estare"
    assert normalize("I'll be there…") == "ill be there"


def test_a_phrasebook_rejects_a_bare_yaml_boolean(tmp_path: Path) -> None:
    book = tmp_path / "xx.yaml"
    book.write_text("confirm_whole: [yes]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="quote it"):
        load_phrasebook(book)
    book.write_text("confirm_whole: ['yes']\n", encoding="utf-8")
    assert isinstance(load_phrasebook(book), Phrasebook)


@pytest.mark.parametrize(("body", "intent"), [
    ("ALTO por favor", "stop"), ("STOP please", "stop"), ("Basta ya", "stop"),
    ("Yes, thank you!", "confirm"), ("Sí, gracias", "confirm"),
])
def test_politeness_around_a_one_word_reply_is_dropped(body: str, intent: str) -> None:
    assert classify(body, REMINDER).intent == intent


@pytest.mark.parametrize("body", ["Cancel tomorrow's appointment", "cancel appt",
                                  "Cancelen mi cita por favor", "Can't make it, please cancel"])
def test_cancel_with_the_appointment_is_a_cancellation_not_an_opt_out(body: str) -> None:
    assert classify(body, REMINDER).intent == "cancel"


def test_a_leading_yes_with_another_request_is_ambiguous() -> None:
    assert classify("yes, or can we reschedule?", REMINDER).rule.startswith("ambiguous")
    assert classify("yes I have a question about parking", REMINDER).intent == "text"


@pytest.mark.parametrize(("text", "rule"), [
    ("B", "the step's reply key 'B'"),
    ("yes", "yes ('yes') to an invitation to book"),
    ("Sí", "yes ('si') to an invitation to book"),
    ("can I book another day?", "reschedule phrase 'another day'"),
])
def test_an_invitation_to_book_reads_yes_and_its_key_as_asking_for_times(text: str,
                                                                          rule: str) -> None:
    reply = classify(text, {"B": "book"})
    assert (reply.intent, reply.action, reply.rule) == ("reschedule", "book", rule)


def test_yes_to_a_message_asking_for_nothing_is_still_free_text() -> None:
    assert classify("yes", {"R": "reschedule"}).intent == "text"
