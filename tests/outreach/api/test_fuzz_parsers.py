"""Hypothesis over every parser that hostile input reaches before anything is stored: the JSON
reader and its depth limit, FHIR validation, topic-notification bundles, the bounded form reader
behind the Twilio webhooks and the pages, Twilio's field grammar, the reply classifier and E.164
normalisation. Each raises only its documented error, and takes bounded time on huge input."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from channels.inbound import Intent, Reply, classify
from channels.phones import e164
from channels.signatures import INBOUND_FIELDS, STATUS_FIELDS, twilio_webhook_problem
from connector.errors import InvalidResource
from connector.notifications import TopicNotification, parse_notification
from connector.resources import MAX_DEPTH, parse_json, validate_resource
from outreach.api.deps import BadForm, bounded_form

FIXTURES = Path(__file__).resolve().parents[3] / "fhir_fixtures" / "notifications"
BUNDLES = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
INTENTS = frozenset(typing.get_args(Intent))
E164 = re.compile(r"\+[1-9][0-9]{7,14}")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.text() | st.floats(
    allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=20,
)


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    with contextlib.suppress(InvalidResource, BadForm):
        call()
    return time.perf_counter() - start


# -- JSON ---------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
@example(b"\xff\xfe{}")
@example(b'{"a": "\\u0000"}')
@example(b"1" * 5000)
@example(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
def test_parse_json_raises_nothing_but_invalid_resource(body: bytes) -> None:
    try:
        parse_json(body)
    except InvalidResource as exc:
        assert exc.outcome["resourceType"] == "OperationOutcome"


@FUZZ
@given(json_values)
def test_parse_json_reads_back_what_json_writes(value: Any) -> None:
    """Nothing valid is refused: the depth scan and the NUL check see only what they should."""
    text = json.dumps(value)
    if "\\u0000" in text:
        with pytest.raises(InvalidResource):
            parse_json(text.encode())
    else:
        assert parse_json(text.encode()) == value


@pytest.mark.parametrize("body", [
    b"[" * 1_000_000,                                   # deep, unclosed
    b'{"a":' * 300_000 + b"1" + b"}" * 300_000,         # deep, well formed
    b'"' + b"\\\\" * 1_000_000 + b'"',                  # escapes to scan
    b'["' + b"x" * 5_000_000 + b'"]',                   # long string
    b"1" * 1_000_000,                                   # an integer too long to convert
])
def test_parse_json_takes_bounded_time_on_huge_input(body: bytes) -> None:
    assert _seconds(lambda: parse_json(body)) < 2.0


# -- FHIR resources and topic-notification bundles ---------------------------------------------

@FUZZ
@given(json_values, st.sampled_from([None, "Appointment", "Bundle", "Patient"]))
@example({"resourceType": "Appointment", "status": ["booked"]}, "Appointment")
@example({"resourceType": "NoSuchType"}, None)
def test_validate_resource_raises_nothing_but_invalid_resource(value: Any,
                                                                expected: str | None) -> None:
    with contextlib.suppress(InvalidResource):
        assert validate_resource(value, expected) is value


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document where a value can be swapped."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_bundles(draw: st.DrawFn) -> Any:
    """A real notification bundle with a few of its values (anywhere) replaced by any JSON."""
    bundle = copy.deepcopy(draw(st.sampled_from(BUNDLES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(bundle)))
        if not path:
            return draw(json_values)
        parent = bundle
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(json_values | st.sampled_from(
            ["", "x" * 300, "2026-13-45", "not-an-instant", "Appointment/..", "9" * 30, -1]))
    return bundle


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bundles())
@example({"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
    "resourceType": "Parameters", "parameter": [
        {"name": "subscription", "valueString": "Subscription/s1"},
        {"name": "type", "valueCode": "heartbeat"}]}}]})
@example({"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
    "resourceType": "Parameters", "parameter": None}}]})
def test_a_notification_bundle_is_read_or_refused_as_invalid(bundle: Any) -> None:
    """What the topic route does with a body: valid R4 first, then the notification reader."""
    try:
        note = parse_notification(validate_resource(bundle, "Bundle"))
    except InvalidResource:
        return
    assert isinstance(note, TopicNotification)
    # What is stored of it fits its columns.
    assert len(note.subscription_id) <= 64 and len(note.topic or "") <= 255
    assert note.status is None or len(note.status) <= 16
    numbers = [e.number for e in note.events if e.number is not None]
    assert all(0 <= n < 2**63 for n in [*numbers, note.events_since_start or 0])


def test_every_shipped_notification_bundle_still_reads() -> None:
    for bundle in BUNDLES:
        assert parse_notification(validate_resource(bundle, "Bundle")).subscription_id


# -- the bounded form reader and Twilio's grammar ----------------------------------------------

def _request(body: bytes, content_type: str, chunk: int) -> Request:
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
                for i, p in enumerate(pieces)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", content_type.encode("latin-1"))]}
    return Request(scope, receive)


FORM = "application/x-www-form-urlencoded"


@FUZZ
@given(st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode),
       st.sampled_from([FORM, FORM + "; charset=utf-8", "text/plain", "", "multipart/form-data"]),
       st.integers(1, 512))
@example(b"a=1&a=2", FORM, 3)
@example(b"%ff=1", FORM, 1)
@example(b"&".join(b"f%d=1" % i for i in range(200)), FORM, 64)
def test_the_form_reader_returns_strings_or_a_bad_form(body: bytes, content_type: str,
                                                        chunk: int) -> None:
    try:
        form = asyncio.run(bounded_form(_request(body, content_type, chunk), limit=2048))
    except BadForm as exc:
        assert exc.status in (400, 413, 415)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in form.items())
    assert len(form) <= 50


def test_the_form_reader_stops_reading_past_its_limit() -> None:
    """Ten megabytes in small chunks: refused as soon as the limit is passed, quickly."""
    request = _request(b"a" * 10_000_000, FORM, 1024)
    assert _seconds(lambda: asyncio.run(bounded_form(request, limit=16_384))) < 1.0


twilio_values = st.text(max_size=40) | st.sampled_from(
    ["SM" + "a" * 32, "AC" + "0" * 32, "+15555550123", "12345", "delivered", "2010-04-01",
     "x" * 2000, "\x00", "+1555555012\x00"])
twilio_forms = st.dictionaries(
    st.sampled_from([*INBOUND_FIELDS, *STATUS_FIELDS, "NumMedia", "ErrorCode", "SmsSid",
                     "MessagingServiceSid", "ApiVersion", "X-Y", "", "Extra_1"]) | st.text(
        max_size=8), twilio_values, max_size=10)


@FUZZ
@given(twilio_forms, st.sampled_from([INBOUND_FIELDS, STATUS_FIELDS]),
       st.sampled_from([None, "AC" + "0" * 32]), st.booleans())
def test_twilio_grammar_names_a_problem_or_none(form: dict[str, str], required: tuple[str, ...],
                                                account: str | None, sender_ids: bool) -> None:
    problem = twilio_webhook_problem(form, required, account, sender_ids=sender_ids)
    if problem is None:
        assert all(name in form for name in required)
        assert not any("\x00" in value for value in form.values())
    else:
        # The reason names a field, never echoes a value (it is logged): no value long enough
        # to be a phone number or a SID appears in it.
        assert not any(len(v) >= 12 and v in problem for v in form.values())


# -- the reply classifier -----------------------------------------------------------------------

reply_maps = st.dictionaries(st.text(max_size=6), st.sampled_from(
    ["confirm", "cancel", "cancel-appointment", "score", "reschedule", "anything"]), max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), reply_maps, st.none() | st.tuples(st.integers(0, 5),
                                                                 st.integers(5, 10)),
       st.booleans())
@example("STOP", {}, None, False)
@example("¡Sí, ahí estaré! 👍", {"C": "confirm"}, None, False)
@example("ＳＴＯＰ", {}, None, False)
@example("İ̇", {}, None, False)
@example("\u202e\x00\ud7ff\U0010ffff", {"\x00": "confirm"}, None, True)
def test_classify_reads_any_text_as_one_of_its_intents(body: str, replies: dict[str, str],
                                                       score_range: tuple[int, int] | None,
                                                       opted_out: bool) -> None:
    reply = classify(body, replies, score_range, opted_out=opted_out)
    assert isinstance(reply, Reply) and reply.intent in INTENTS
    assert reply.rule
    if reply.intent == "score":
        assert reply.score is not None


@pytest.mark.parametrize("body", [
    "stop " * 200_000, "a" * 1_000_000, "👍" * 500_000, "\u0301" * 1_000_000,
    "ﷺ" * 300_000,  # one character that NFKD expands eighteen-fold
])
def test_classify_takes_bounded_time_on_huge_replies(body: str) -> None:
    assert _seconds(lambda: classify(body, {"C": "confirm"})) < 1.0


# -- E.164 --------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"(tel:)?(\+|00)?[0-9 ().\-/]{0,20}",
                                            fullmatch=True),
       st.none() | st.text(max_size=4) | st.sampled_from(["1", "44", "34", "0", "1234"]))
@example("+1 (555) 555-0123", None)
@example("١٢٣٤٥٦٧٨٩", "1")
@example("+１５５５５５５０１２３", None)
@example("tel:0044 20 7946 0000", None)
def test_e164_gives_a_dialable_number_or_none(value: str, country: str | None) -> None:
    number = e164(value, country)
    if number is not None:
        assert E164.fullmatch(number)
        assert e164(number) == number  # already normalised stays so


def test_e164_takes_bounded_time_on_a_huge_value() -> None:
    assert _seconds(lambda: e164("(" * 1_000_000 + "1" * 1_000_000, "1")) < 1.0
