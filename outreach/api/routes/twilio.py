"""Twilio's webhooks: incoming SMS and delivery-status callbacks, signature-checked, each field
checked against what Twilio sends, and each signature acted on once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated
from xml.sax.saxutils import escape

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from channels.signatures import (
    INBOUND_FIELDS,
    STATUS_FIELDS,
    twilio_webhook_problem,
    valid_twilio_signature,
)
from outreach.api.deps import BadForm, RuntimeDep, bounded_form
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.replies.inbound import InboundResult, handle_sms
from outreach.store import replays
from outreach.writeback.delivery_status import apply_status

log = logging.getLogger(__name__)

router = APIRouter(prefix="/channels/twilio", tags=["channels"])

TWIML = "application/xml"
# A 1,600-character reply in a 3-byte script, percent-encoded, with Twilio's other fields and up
# to ten media URLs fits well inside these (the body-size middleware usually refuses first).
MAX_FORM_BYTES = 65_536
MAX_FIELDS = 100

Signature = Annotated[str | None, Header(alias="X-Twilio-Signature")]


class ForgedWebhook(Exception):
    pass


class Refused(Exception):
    """A request we will not act on, answered `status` with a plain message (nothing stored)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> Response:
        return Response(f"{self}\n", status_code=self.status, media_type="text/plain")


async def _read_form(request: Request) -> dict[str, str]:
    try:
        return await bounded_form(request, MAX_FORM_BYTES, MAX_FIELDS)
    except BadForm as exc:
        raise Refused(exc.status, str(exc)) from exc


async def _checked_form(request: Request, rt: Runtime, signature: str | None,
                        required: Sequence[str], *, sender_ids: bool = False,
                        ) -> tuple[dict[str, str], str]:
    """The POSTed form and its signature's digest (replays.digest), if X-Twilio-Signature
    matches it and the public URL Twilio called (else ForgedWebhook: 403), and every field is as
    Twilio sends it (else Refused: 400)."""
    form = await _read_form(request)
    token = rt.settings.twilio_auth_token
    url = rt.settings.public(request.url.path)
    if url and request.url.query:
        url += "?" + request.url.query
    if token is None or url is None or signature is None or not valid_twilio_signature(
            token.get_secret_value(), url, form, signature):
        log.warning("rejected a Twilio webhook on %s: bad or missing signature", request.url.path)
        raise ForgedWebhook
    problem = twilio_webhook_problem(form, required, rt.settings.twilio_account_sid,
                                     sender_ids=sender_ids)
    if problem is not None:
        log.warning("refused a signed Twilio webhook on %s: %s", request.url.path, problem)
        raise Refused(400, f"refused: {problem}")
    return form, replays.digest(signature)


def _first_use(rt: Runtime, sha256: str, message_sid: str) -> bool:
    """False for a redelivery (this signature was accepted for this very message: nothing to
    do); Refused when it was accepted for another message (the same signed bytes re-split).
    A request that passes records the signature with what it does, in one transaction."""
    with rt.sessions() as session:
        accepted_for = replays.accepted_for(session, sha256)
    if accepted_for is None:
        return True
    if accepted_for == message_sid:
        log.info("Twilio webhook for %s delivered again: already handled", message_sid)
        return False
    log.warning("refused a replayed Twilio signature (accepted before for another message)")
    raise Refused(400, "refused: this signature was already used")


def _twiml(message: str | None) -> Response:
    body = f"<Response><Message>{escape(message)}</Message></Response>" if message \
        else "<Response/>"
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + body, media_type=TWIML)


def _reply(rt: Runtime, form: dict[str, str], sha256: str) -> InboundResult | None:
    """The reply handled (None: a redelivery); an appointment it changed in the EHR goes to
    intake, which re-plans (cancels) the journeys that follow it."""
    sid = form["MessageSid"]
    if not _first_use(rt, sha256, sid):
        return None
    result = handle_sms(rt, message_id=sid, from_=form["From"], to=form["To"],
                        body=form["Body"], signature_sha256=sha256)
    if result.changed is not None:
        ingest(rt, result.changed, source="reply")
    return result


def _status(rt: Runtime, form: dict[str, str], sha256: str) -> None:
    sid = form["MessageSid"]
    if _first_use(rt, sha256, sid):
        apply_status(rt, sid, form["MessageStatus"], form.get("ErrorCode") or None,
                     signature_sha256=sha256)


@router.post("/inbound")
async def inbound(request: Request, rt: RuntimeDep, signature: Signature = None) -> Response:
    try:
        form, checked = await _checked_form(request, rt, signature, INBOUND_FIELDS)
        result = await run_in_threadpool(_reply, rt, form, checked)
    except Refused as refused:
        return refused.response()
    return _twiml(result.reply if result else None)


@router.post("/status")
async def status(request: Request, rt: RuntimeDep, signature: Signature = None) -> Response:
    try:
        form, checked = await _checked_form(request, rt, signature, STATUS_FIELDS,
                                            sender_ids=True)  # our From may be a name
        await run_in_threadpool(_status, rt, form, checked)
    except Refused as refused:
        return refused.response()
    return Response(status_code=204)
