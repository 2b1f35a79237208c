"""Fixtures for the SMART view: the local authorization server, a runtime wired to it, a client."""

from __future__ import annotations

import logging
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


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log(api_server: ApiServer) -> Iterator[list[str]]:
    """The lines uvicorn's access log writes during the test, after our redaction filter (the
    test server logs at warning; this turns the access log on for new connections)."""
    logger = logging.getLogger("uvicorn.access")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def assert_no_launch_secrets(lines: list[str], *secrets: str) -> None:
    """The access log saw the SMART requests, and none of the launch's secrets."""
    assert any("/smart/callback?" in line and "code=…" in line and "state=…" in line
               for line in lines), lines
    for line in lines:
        for secret in secrets:
            assert secret not in line, (secret, line)
