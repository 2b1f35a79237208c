"""Twilio's webhooks: incoming SMS and delivery-status callbacks, signature-checked."""

from __future__ import annotations

import logging
from typing import Annotated
from xml.sax.saxutils import escape

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from channels.signatures import valid_twilio_signature
from outreach.api.deps import RuntimeDep
from outreach.core.ports import Runtime
from outreach.intake.ingest import ingest
from outreach.replies.inbound import InboundResult, handle_sms
from outreach.writeback.delivery_status import apply_status

log = logging.getLogger(__name__)

router = APIRouter(prefix="/channels/twilio", tags=["channels"])

TWIML = "application/xml"


class ForgedWebhook(Exception):
    pass


async def signed_form(
    request: Request, rt: RuntimeDep,
    signature: Annotated[str | None, Header(alias="X-Twilio-Signature")] = None,
) -> dict[str, str]:
    """The POSTed form, if X-Twilio-Signature matches it and the public URL Twilio called."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    token = rt.settings.twilio_auth_token
    url = rt.settings.public(request.url.path)
    if url and request.url.query:
        url += "?" + request.url.query
    if token is None or url is None or not valid_twilio_signature(
            token.get_secret_value(), url, form, signature):
        log.warning("rejected a Twilio webhook on %s: bad or missing signature", request.url.path)
        raise ForgedWebhook
    return form


SignedForm = Annotated[dict[str, str], Depends(signed_form)]


def _twiml(message: str | None) -> Response:
    body = f"<Response><Message>{escape(message)}</Message></Response>" if message \
        else "<Response/>"
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + body, media_type=TWIML)


def _reply(rt: Runtime, form: dict[str, str]) -> InboundResult:
    """The reply handled; an appointment it changed in the EHR goes to intake, which re-plans
    (cancels) the journeys that follow it."""
    result = handle_sms(rt, message_id=form.get("MessageSid", ""), from_=form.get("From", ""),
                        to=form.get("To", ""), body=form.get("Body", ""))
    if result.changed is not None:
        ingest(rt, result.changed, source="reply")
    return result


@router.post("/inbound")
async def inbound(form: SignedForm, rt: RuntimeDep) -> Response:
    result = await run_in_threadpool(_reply, rt, form)
    return _twiml(result.reply)


@router.post("/status")
async def status(form: SignedForm, rt: RuntimeDep) -> Response:
    await run_in_threadpool(apply_status, rt, form.get("MessageSid", ""),
                            form.get("MessageStatus", ""), form.get("ErrorCode") or None)
    return Response(status_code=204)
