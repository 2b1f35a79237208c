"""Who opened the clinician view: the launch's token plus, when the EHR sent a verifiable
id_token, the signed-in user's `fhirUser` (staff replies name them as the sender)."""

from __future__ import annotations

import logging
from datetime import datetime

import httpx

from outreach.staff.smart.identity import staff_member
from outreach.staff.smart.launch import (
    ClientAuth,
    LaunchError,
    PendingLaunch,
    TokenGrant,
    _grant,
    token_response,
)

log = logging.getLogger(__name__)

# Whoever the EHR lets open a chart may see it; whether they may answer as a clinician is the
# reply's question (only a Practitioner is a Communication.sender we can vouch for).
FHIR_USER_TYPES = frozenset({"Practitioner", "PractitionerRole", "RelatedPerson", "Patient",
                             "Person"})


async def clinician_grant(client: httpx.AsyncClient, pending: PendingLaunch, code: str,
                          auth: ClientAuth, client_id: str, now: datetime
                          ) -> tuple[TokenGrant, str | None]:
    """The token with patient context, and the user as "Type/id" (None when the EHR sent no
    id_token or one that does not verify: the view still opens, replies say who is unknown)."""
    body = await token_response(client, pending, code, auth)
    grant = _grant(body, now)
    if "id_token" not in body:
        return grant, None
    try:
        return grant, await staff_member(client, pending, body, client_id, FHIR_USER_TYPES, now)
    except LaunchError as exc:
        log.info("SMART launch: the signed-in user is unknown (%s)", exc.message)
        return grant, None
