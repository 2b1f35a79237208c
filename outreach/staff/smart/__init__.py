"""The clinician view as a SMART on FHIR app: launch flow, encrypted session, timeline query."""

from outreach.staff.smart.client_auth import ClientAuth, client_auth
from outreach.staff.smart.discovery import discover
from outreach.staff.smart.launch import (
    LaunchError,
    PendingLaunch,
    SmartEndpoints,
    TokenGrant,
    allowed_issuer,
    authorize_url,
    exchange_code,
    new_pending_launch,
    scopes_for,
)
from outreach.staff.smart.session import CookieBox
from outreach.staff.smart.timeline import Timeline, load_timeline

__all__ = [
    "ClientAuth",
    "CookieBox",
    "LaunchError",
    "PendingLaunch",
    "SmartEndpoints",
    "Timeline",
    "TokenGrant",
    "allowed_issuer",
    "authorize_url",
    "client_auth",
    "discover",
    "exchange_code",
    "load_timeline",
    "new_pending_launch",
    "scopes_for",
]
