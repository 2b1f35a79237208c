"""Fixtures for the SMART view: the local authorization server, a runtime wired to it, a client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from outreach.core.ports import Runtime
from tests.conftest import RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.smart_auth_server import CLIENT_ID, SmartAuthServer

SESSION_SECRET = "smart-session-secret-for-tests-" + "s" * 16
PATIENT_ID = "pat-1"


@pytest.fixture
def auth(api_server: ApiServer) -> Iterator[SmartAuthServer]:
    with SmartAuthServer(f"{api_server.url}/smart/callback") as server:
        server.register_launch("xyz", PATIENT_ID)
        yield server


@pytest.fixture
def smart_settings(api_server: ApiServer, auth: SmartAuthServer) -> dict[str, object]:
    return {"public_url": api_server.url, "smart_client_id": CLIENT_ID,
            "smart_allowed_iss": auth.fhir_base, "smart_session_secret": SESSION_SECRET}


@pytest.fixture
def smart_rt(make_runtime: RuntimeFactory, smart_settings: dict[str, object]) -> Runtime:
    return make_runtime(**smart_settings)


@pytest.fixture
def client(api_server: ApiServer) -> Iterator[httpx.Client]:
    """An HTTP client that keeps cookies and does not follow redirects, so each hop is seen."""
    with httpx.Client(base_url=api_server.url, follow_redirects=False, timeout=10) as client:
        yield client
