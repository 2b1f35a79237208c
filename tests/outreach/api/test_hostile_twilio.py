"""Hostile signed Twilio webhooks on the real API server (issue 14). Twilio signs the URL and each
name+value run together, so a captured request can be re-split without breaking its signature:
each field is checked against what Twilio sends, a failure is a plain 400 with nothing stored,
and a signature is acted on once. Oversized or NUL-bearing fields are a 400, never a 500."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
from sqlalchemy import delete, func, select

from channels.signatures import twilio_signature
from outreach.core.clock import SimulatedClock
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.replies.inbound import handle_sms
from outreach.store.models import (
    DeliveryAttempt,
    InboundMessage,
    ScheduledStep,
    WebhookSignature,
    Writeback,
)
from outreach.worker import jobs
from outreach.writeback.delivery_status import apply_status
from tests.conftest import RuntimeFactory
from tests.outreach.replies.test_sms import CLINIC, MOBILE, NOW
from tests.support.api_process import ApiProcess
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.fhir_data import appointment, patient
from tests.support.fhir_server import FhirTestServer
from tests.support.journeys import SMS_REMINDERS
from tests.support.twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioServer,
    inbound_params,
    signed_post,
)

SID = "SM" + "ab" * 16


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def rt(make_runtime: RuntimeFactory, fhir: FhirTestServer, twilio: TwilioServer,
       clock: SimulatedClock, api_server: ApiServer, tmp_path: Path, redis_url: str
       ) -> Runtime:
    (tmp_path / "sms-reminders.yaml").write_text(SMS_REMINDERS)
    return make_runtime(
        rules_dir=tmp_path, clock=clock, fhir_base_url=fhir.base_url, public_url=api_server.url,
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=CLINIC,
        twilio_base_url=twilio.base_url, sms_rate_per_second=100, broker_url=redis_url)


def _reminded(rt: Runtime, clock: SimulatedClock) -> None:
    """A patient whose 72 h reminder (which takes C / X replies) went out by SMS."""
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(email=None, mobile=MOBILE))
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5)))
    ingest(rt, appt, source="test")
    drain(rt)
    with rt.sessions() as session:
        due = session.scalars(select(ScheduledStep.due_at).where(
            ScheduledStep.step_id == "reminder-72h")).one()
    clock.set(due)
    jobs.sweep(rt)
    drain(rt)


def _inbound_url(api: ApiServer) -> str:
    return f"{api.url}/channels/twilio/inbound"


def _post(url: str, form: dict[str, str], signature: str | None = None) -> httpx.Response:
    """Signed over `form` itself unless another request's signature is given (a replay)."""
    return signed_post(url, form, signature=signature)


def _stored(rt: Runtime) -> tuple[int, list[str]]:
    """(inbound messages recorded, descriptions of the staff Tasks queued)."""
    with rt.sessions() as session:
        inbound = session.scalar(select(func.count()).select_from(InboundMessage)) or 0
        tasks = list(session.scalars(select(Writeback.resource).where(
            Writeback.resource_type == "Task")))
    return inbound, [t["description"] for t in tasks]


def _refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain")
    assert all(w in response.text for w in words), response.text


def _merged(form: dict[str, str], name: str) -> dict[str, str]:
    """`form` with the field sorted after `name` folded into `name`'s value: the same bytes
    under Twilio's signature, with the boundary between the two fields moved."""
    names = sorted(form)
    following = names[names.index(name) + 1]
    merged = {k: v for k, v in form.items() if k != following}
    merged[name] = form[name] + following + form[following]
    return merged


def test_a_cancel_reply_re_split_at_any_boundary_is_400_and_recorded_once(
    rt: Runtime, api_server: ApiServer, clock: SimulatedClock
) -> None:
    _reminded(rt, clock)
    url = _inbound_url(api_server)
    form = inbound_params(MOBILE, CLINIC, "X")
    signature = twilio_signature(AUTH_TOKEN, url, form)
    first = _post(url, form)
    assert first.status_code == 200 and "asked the clinic to cancel" in first.text
    drain(rt)
    inbound, tasks = _stored(rt)
    assert inbound == 1 and len(tasks) == 1 and "cancel" in tasks[0]

    for name in sorted(form)[:-1]:  # every boundary between two fields
        replay = _merged(form, name)
        assert twilio_signature(AUTH_TOKEN, url, replay) == signature  # still "valid"
        _refused(_post(url, replay, signature), "refused")

    drain(rt)
    assert _stored(rt) == (inbound, tasks)


def test_a_reply_replayed_as_sent_is_acted_on_once(
    rt: Runtime, api_server: ApiServer, clock: SimulatedClock
) -> None:
    _reminded(rt, clock)
    url = _inbound_url(api_server)
    form = inbound_params(MOBILE, CLINIC, "X")
    assert _post(url, form).status_code == 200
    drain(rt)
    recorded = _stored(rt)

    again = _post(url, form)  # a redelivery: a 200 and nothing more, as for any duplicate

    assert again.status_code == 200 and again.text.endswith("<Response/>")
    drain(rt)
    assert _stored(rt) == recorded


def test_a_replay_after_the_reply_was_purged_is_not_acted_on_again(
    rt: Runtime, api_server: ApiServer, clock: SimulatedClock
) -> None:
    _reminded(rt, clock)
    url = _inbound_url(api_server)
    form = inbound_params(MOBILE, CLINIC, "X")
    assert _post(url, form).status_code == 200
    drain(rt)
    with rt.sessions.begin() as session:  # retention: the reply and its write-backs are gone
        session.execute(delete(Writeback).where(Writeback.identifier.contains(form["MessageSid"])))
        session.execute(delete(InboundMessage))

    replayed = _post(url, form)

    assert replayed.status_code == 200 and replayed.text.endswith("<Response/>")
    drain(rt)
    assert _stored(rt) == (0, [])


def _replica_env(rt: Runtime, redis_url: str) -> dict[str, str]:
    """Another API replica's settings: the same database, Redis, secrets and public URL."""
    settings = rt.settings
    assert settings.webhook_secret is not None and settings.public_url is not None
    return {"OUTREACH_DATABASE_URL": settings.database_url, "OUTREACH_BROKER_URL": redis_url,
            "OUTREACH_WEBHOOK_SECRET": settings.webhook_secret.get_secret_value(),
            "OUTREACH_PUBLIC_URL": str(settings.public_url),
            "OUTREACH_FHIR_BASE_URL": str(settings.fhir_base_url),
            "OUTREACH_RULES_DIR": str(settings.rules_dir),
            "OUTREACH_TWILIO_ACCOUNT_SID": ACCOUNT_SID, "OUTREACH_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "OUTREACH_TWILIO_FROM": CLINIC}


def _signatures(rt: Runtime) -> list[tuple[str, str, str]]:
    with rt.sessions() as session:
        return [tuple(row) for row in session.execute(select(
            WebhookSignature.sha256, WebhookSignature.kind, WebhookSignature.message_sid))]


def test_a_purged_reply_replayed_to_another_api_process_after_a_redis_flush_is_not_acted_on(
    rt: Runtime, api_server: ApiServer, clock: SimulatedClock, redis_url: str, tmp_path: Path
) -> None:
    _reminded(rt, clock)
    url = _inbound_url(api_server)
    form = inbound_params(MOBILE, CLINIC, "X")
    signature = twilio_signature(AUTH_TOKEN, url, form)
    assert _post(url, form).status_code == 200
    drain(rt)
    inbound, tasks = _stored(rt)
    assert inbound == 1 and len(tasks) == 1
    # Kept as a digest, with the message it was accepted for (never the signature itself).
    assert _signatures(rt) == [(hashlib.sha256(signature.encode()).hexdigest(), "inbound",
                                form["MessageSid"])]
    with rt.sessions.begin() as session:  # retention: the reply and its write-backs are gone
        session.execute(delete(Writeback).where(Writeback.identifier.contains(form["MessageSid"])))
        session.execute(delete(InboundMessage))
    redis.Redis.from_url(redis_url).flushdb()

    with ApiProcess(_replica_env(rt, redis_url), tmp_path / "replica.log") as replica:
        replica_url = f"{replica.url}/channels/twilio/inbound"
        again = _post(replica_url, form, signature)  # the same bytes, to another process
        assert again.status_code == 200 and again.text.endswith("<Response/>")
        for name in sorted(form)[:-1]:
            assert _post(replica_url, _merged(form, name), signature).status_code == 400

    drain(rt)
    assert _stored(rt) == (0, [])
    assert len(_signatures(rt)) == 1


def test_one_signature_records_one_reply_even_under_another_message_id(
    rt: Runtime, clock: SimulatedClock
) -> None:
    # A re-split that passed the field checks would carry another MessageSid under the same
    # signature; raced past the route's check, the record itself still refuses it.
    _reminded(rt, clock)
    digest = hashlib.sha256(b"one signature").hexdigest()
    first = handle_sms(rt, message_id="SM" + "1" * 32, from_=MOBILE, to=CLINIC, body="X",
                       signature_sha256=digest)
    second = handle_sms(rt, message_id="SM" + "2" * 32, from_=MOBILE, to=CLINIC, body="X",
                        signature_sha256=digest)

    assert not first.duplicate and first.writeback_ids
    assert second.duplicate and not second.writeback_ids
    drain(rt)
    inbound, tasks = _stored(rt)
    assert inbound == 1 and len(tasks) == 1


def _field(name: str, value: str) -> dict[str, str]:
    form = inbound_params(MOBILE, CLINIC, "hello?")
    form[name] = value
    return form


def _without(name: str) -> dict[str, str]:
    form = inbound_params(MOBILE, CLINIC, "hello?")
    del form[name]
    return form


@pytest.mark.parametrize("form,words", [
    pytest.param(_field("From", "+1" + "5" * 300), ["From"], id="from-over-255"),
    pytest.param(_field("To", "+1" + "5" * 300), ["To"], id="to-over-255"),
    pytest.param(_field("MessageSid", SID + "0" * 40), ["MessageSid"], id="sid-over-64"),
    pytest.param(_field("MessageSid", "SM-short"), ["MessageSid"], id="sid-not-a-sid"),
    pytest.param(_field("MessageSid", "SM" + "AB" * 16), ["MessageSid"], id="sid-upper-hex"),
    pytest.param(_field("Body", "stop\x00"), ["Body", "NUL"], id="body-nul"),
    pytest.param(_field("From", MOBILE + "\x00"), ["From", "NUL"], id="from-nul"),
    pytest.param(_field("FromCity", "NASH\x00UA"), ["FromCity", "NUL"], id="other-field-nul"),
    pytest.param(_field("Body", "a" * 1601), ["Body", "1600"], id="body-1601"),
    pytest.param(_field("From", "whatsapp:" + MOBILE), ["From"], id="from-not-a-number"),
    pytest.param(_field("From", "+1 (555) 555-0123"), ["From"], id="from-not-e164"),
    pytest.param(_field("AccountSid", "AC" + "1" * 32), ["AccountSid"], id="another-account"),
    pytest.param(_field("NumMedia", "0NumSegments1"), ["NumMedia"], id="count-not-a-number"),
    pytest.param(_field("Cancel my appointment", ""), ["field name"], id="field-name-spaces"),
    pytest.param(_without("MessageSid"), ["MessageSid", "missing"], id="no-sid"),
    pytest.param(_without("From"), ["From", "missing"], id="no-from"),
    pytest.param(_without("Body"), ["Body", "missing"], id="no-body"),
])
def test_a_signed_reply_with_a_field_twilio_never_sends_is_400_never_500(
    rt: Runtime, api_server: ApiServer, form: dict[str, str], words: list[str]
) -> None:
    _refused(_post(_inbound_url(api_server), form), *words)
    assert _stored(rt) == (0, [])


def test_the_longest_reply_and_a_short_code_are_accepted(
    rt: Runtime, api_server: ApiServer
) -> None:
    url = _inbound_url(api_server)
    longest = _field("Body", "ñ" * 1600)
    assert _post(url, longest).status_code == 200
    assert _post(url, {**inbound_params("55555", CLINIC, "STOP")}).status_code == 200
    # A field Twilio added after this was written is signed and let through.
    assert _post(url, _field("ChannelMetadata", '{"type": "sms"}')).status_code == 200
    assert _stored(rt)[0] == 3


def _raw_post(url: str, body: bytes, content_type: str, signature: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": content_type,
                                                  "X-Twilio-Signature": signature}, timeout=10)


def test_a_repeated_field_invalid_utf8_or_another_encoding_is_refused(
    rt: Runtime, api_server: ApiServer
) -> None:
    url = _inbound_url(api_server)
    form = inbound_params(MOBILE, CLINIC, "STOP")
    signature = twilio_signature(AUTH_TOKEN, url, form)
    form_type = "application/x-www-form-urlencoded"
    repeated = urlencode(form) + "&Body=START"
    _refused(_raw_post(url, repeated.encode(), form_type, signature), "more than once")
    _refused(_raw_post(url, urlencode(form).encode() + b"%FF", form_type, signature), "UTF-8")
    _refused(_raw_post(url, urlencode(form).encode() + b"\xff", form_type, signature), "UTF-8")
    multipart = _raw_post(url, b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x", signature)
    assert multipart.status_code == 415
    assert _stored(rt) == (0, [])


# -- delivery-status callbacks ------------------------------------------------------------------


def _sent(rt: Runtime, twilio: TwilioServer) -> dict[str, Any]:
    """The booking confirmation, sent by SMS: Twilio's Message resource."""
    assert rt.ehr is not None
    pat, _ = rt.ehr.create(patient(email=None, mobile=MOBILE))
    appt, _ = rt.ehr.create(appointment(f"Patient/{pat['id']}", NOW + timedelta(days=5)))
    ingest(rt, appt, source="test")
    drain(rt)
    (message,) = twilio.messages
    return message


def _status_form(message: dict[str, Any], status: str, **extra: str) -> dict[str, str]:
    return {"MessageSid": message["sid"], "SmsSid": message["sid"], "MessageStatus": status,
            "SmsStatus": status, "To": message["to"], "From": message["from"],
            "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", **extra}


def _provider_status(rt: Runtime) -> tuple[str | None, str | None]:
    with rt.sessions() as session:
        attempt = session.scalars(select(DeliveryAttempt)).one()
        return attempt.provider_status, attempt.error_code


@pytest.mark.parametrize("changes,words", [
    pytest.param({"MessageStatus": "exploded"}, ["MessageStatus"], id="unknown-status"),
    pytest.param({"MessageStatus": "delivered\x00"}, ["NUL"], id="status-nul"),
    pytest.param({"MessageSid": SID + "\x00"}, ["NUL"], id="sid-nul"),
    pytest.param({"MessageSid": "SM" + "0" * 100}, ["MessageSid"], id="sid-over-64"),
    pytest.param({"ErrorCode": "30003; DROP"}, ["ErrorCode"], id="error-code-not-a-code"),
    pytest.param({"AccountSid": "AC" + "1" * 32}, ["AccountSid"], id="another-account"),
])
def test_a_signed_status_callback_twilio_never_sends_is_400(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer, changes: dict[str, str],
    words: list[str]
) -> None:
    message = _sent(rt, twilio)
    form = {**_status_form(message, "delivered"), **changes}
    before = _provider_status(rt)

    _refused(_post(message["status_callback"], form), *words)

    assert _provider_status(rt) == before


def test_a_status_callback_re_split_at_any_boundary_is_400(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer
) -> None:
    message = _sent(rt, twilio)
    url = message["status_callback"]
    form = _status_form(message, "undelivered", ErrorCode="30003")
    signature = twilio_signature(AUTH_TOKEN, url, form)
    before = _provider_status(rt)

    for name in sorted(form)[:-1]:
        _refused(_post(url, _merged(form, name), signature), "refused")

    assert _provider_status(rt) == before != ("undelivered", "30003")
    assert _post(url, form).status_code == 204
    assert _provider_status(rt) == ("undelivered", "30003")


def test_a_status_callback_from_an_alphanumeric_sender_is_accepted(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer
) -> None:
    message = _sent(rt, twilio)
    form = {**_status_form(message, "delivered"), "From": "StExample"}

    assert _post(message["status_callback"], form).status_code == 204
    assert _provider_status(rt) == ("delivered", None)


def test_a_status_callback_is_acted_on_once_per_signature(
    rt: Runtime, api_server: ApiServer, twilio: TwilioServer
) -> None:
    message = _sent(rt, twilio)
    url = message["status_callback"]
    form = _status_form(message, "undelivered", ErrorCode="30003")
    assert _post(url, form).status_code == 204
    assert _provider_status(rt) == ("undelivered", "30003")
    signatures = _signatures(rt)
    assert [kind for _, kind, _ in signatures] == ["status"]

    assert _post(url, form).status_code == 204  # Twilio's redelivery: nothing more
    assert _signatures(rt) == signatures
    # Raced past the route's check under another message's id, the record refuses it too.
    (digest, _, _) = signatures[0]
    assert apply_status(rt, "SM" + "9" * 32, "delivered", signature_sha256=digest) == "ignored"
    assert _signatures(rt) == signatures
