"""Hostile requests at the door: bodies over the limit are refused while they stream (nothing
read, nothing stored, memory flat), secrets too short to trust are refused at start, errors say
nothing of our internals, and no redirect or answer is steered by the Host header."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from outreach.api.app import create_app
from outreach.core.ports import Runtime
from outreach.core.settings import SettingsError, load_settings
from outreach.store.models import InboundMessage, ResourceChangeRecord
from tests.conftest import WEBHOOK_SECRET, RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.twilio_server import ACCOUNT_SID, AUTH_TOKEN

ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def rt(make_runtime: RuntimeFactory, api_server: ApiServer) -> Runtime:
    return make_runtime(public_url=api_server.url, webhook_secret=WEBHOOK_SECRET,
                        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
                        twilio_from="+15555550100", admin_tokens=f"ops={ADMIN}")


def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"a" * min(size, total - sent)
        sent += size


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(("method", "path", "headers", "refused"), [
    # Twilio signs the form: it must be read to be checked, so the limit is what stops it.
    ("POST", "/channels/twilio/inbound",
     {"Content-Type": "application/x-www-form-urlencoded"}, 413),
    # The admin token is checked before the body is read at all (AdminGate).
    ("PUT", "/admin/patients/p1/consent", {"Content-Type": "application/json"}, 401),
    # The rest-hook secret is checked before the body is read at all.
    ("PUT", "/fhir/notify/Appointment/a1", {"Content-Type": "application/fhir+json"}, 401),
    # ...and with them, the limit stops the body.
    ("PUT", "/admin/patients/p1/consent",
     {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"}, 413),
    ("PUT", "/fhir/notify/Appointment/a1",
     {"Content-Type": "application/fhir+json", "X-Outreach-Secret": WEBHOOK_SECRET}, 413),
])
def test_a_huge_streamed_body_is_refused_before_it_is_read(
    rt: Runtime, api_server: ApiServer, method: str, path: str, headers: dict[str, str],
    refused: int,
) -> None:
    # 200 MB with no Content-Length (chunked): refused while it streams.
    before = _peak_rss_mb()
    with httpx.Client(timeout=30) as client:
        try:
            response = client.request(method, api_server.url + path, headers=headers,
                                      content=_chunks(200 << 20))
            status = response.status_code
        except httpx.HTTPError:
            status = refused  # the server may close the connection as soon as it answered
    assert status == refused
    assert _peak_rss_mb() - before < 100, "the body must not be held in memory"
    with rt.sessions() as session:
        assert session.scalar(select(func.count(InboundMessage.id))) == 0
        assert session.scalar(select(func.count(ResourceChangeRecord.id))) == 0


def test_a_declared_length_over_the_limit_is_refused_at_once(rt: Runtime,
                                                              api_server: ApiServer) -> None:
    response = httpx.post(api_server.url + "/channels/twilio/inbound", content=b"x" * 70_000,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert "larger than 65536 bytes" in response.text
    notify = httpx.put(api_server.url + "/fhir/notify/Appointment/a1",
                       content=b"{" * 5_000_001,
                       headers={"Content-Type": "application/fhir+json",
                                "X-Outreach-Secret": WEBHOOK_SECRET})
    assert notify.status_code == 413
    assert notify.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("variable", ["webhook_secret", "twilio_auth_token", "gateway_secret"])
@pytest.mark.parametrize("value", ["", "   ", "short-secret"])
def test_empty_or_short_secrets_are_refused_at_start(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(**{variable: value})
    assert f"OUTREACH_{variable.upper()}" in str(refused.value)


def test_an_empty_smtp_password_is_refused() -> None:
    with pytest.raises(SettingsError, match="OUTREACH_SMTP_PASSWORD"):
        load_settings(smtp_password="")


def test_a_database_error_never_logs_the_values(rt: Runtime,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with rt.sessions() as session, pytest.raises(Exception) as failed:
        session.execute(text("INSERT INTO no_such_table (phone) VALUES (:phone)"),
                        {"phone": "+15555550123"})
    assert "+15555550123" not in str(failed.value)
    assert "+15555550123" not in caplog.text


def test_an_unexpected_error_gives_a_reference_not_our_internals(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from outreach.api.routes import admin

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("secret-internal-detail")

    monkeypatch.setattr(admin, "paused_journeys", broken)
    client = TestClient(create_app(), raise_server_exceptions=False)
    response = client.get("/admin/journeys", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 500
    body = response.json()["issue"][0]["diagnostics"]
    assert "KeyError" not in body and "secret-internal-detail" not in body
    reference = body.split("reference ")[1].split(")")[0]
    assert len(reference) == 12 and reference in caplog.text  # staff can find it in the log


def test_healthz_tells_the_public_only_ok_or_not(make_runtime: RuntimeFactory,
                                                  tmp_path: Any) -> None:
    make_runtime(admin_tokens=f"ops={ADMIN}")
    assert TestClient(create_app()).get("/healthz").json() == {"status": "ok"}
    # A database without our schema: the public learns that it is down, staff learn why.
    make_runtime(admin_tokens=f"ops={ADMIN}", database_url=f"sqlite:///{tmp_path}/empty.db")
    client = TestClient(create_app())
    public = client.get("/healthz")
    assert public.status_code == 503 and public.json() == {"status": "unavailable"}
    staff = client.get("/healthz", headers={"Authorization": f"Bearer {ADMIN}"})
    assert staff.status_code == 503 and staff.json()["detail"]


def test_a_trailing_slash_is_not_redirected_to_the_host_header(rt: Runtime) -> None:
    client = TestClient(create_app())
    response = client.get("/dashboard/", headers={"Host": "evil.example"},
                          follow_redirects=False)
    assert response.status_code == 404
    assert "evil.example" not in response.headers.get("location", "")


def test_only_the_allowed_hosts_are_answered(make_runtime: RuntimeFactory) -> None:
    make_runtime(allowed_hosts="outreach.hospital.example,localhost")
    client = TestClient(create_app())
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/healthz", headers={"Host": "outreach.hospital.example"}).status_code \
        == 200
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200
