"""Hostile notifications on the real API server (issue 14): a type or id that would take a request
outside the EHR's FHIR base or smuggle a query, and JSON built to exhaust the parser, are answered
400 with an OperationOutcome; nothing is stored and the EHR sees no request outside its base."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy import func, select

from connector.client import FhirClient
from connector.errors import InvalidResource
from connector.subscriptions import SECRET_HEADER
from outreach.core.ports import Runtime
from outreach.store.models import (
    Enrollment,
    ResourceChangeRecord,
    ResourceVersion,
    SubscriptionStatus,
)
from tests.conftest import WEBHOOK_SECRET, RuntimeFactory
from tests.support.api_server import ApiServer
from tests.support.fhir_data import appointment
from tests.support.fhir_server import FhirTestServer

FUTURE = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
AUTH = {SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/fhir+json"}
FIXTURES = Path(__file__).resolve().parents[3] / "fhir_fixtures" / "notifications"


class _Forward(BaseHTTPRequestHandler):
    """Records each request line's target as received, then forwards it unchanged."""

    server: _Recorder

    def log_message(self, *_args: object) -> None:
        pass

    def _forward(self) -> None:
        with self.server.lock:
            self.server.targets.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "content-length")}
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=10)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _forward


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream_port = upstream_port
        self.targets: list[str] = []
        self.lock = threading.Lock()


class EhrRecorder:
    """The FHIR test server behind a proxy that keeps every request target it was sent."""

    def __init__(self, fhir: FhirTestServer) -> None:
        self._server = _Recorder(fhir.port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/fhir"

    @property
    def targets(self) -> list[str]:
        with self._server.lock:
            return list(self._server.targets)

    def outside_base(self) -> list[str]:
        """Targets that are not a plain path under /fhir/ (a `..` segment counts as outside)."""
        return [t for t in self.targets
                if not t.startswith("/fhir/") or "/../" in t + "/" or "/./" in t + "/"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ehr(fhir: FhirTestServer) -> Iterator[EhrRecorder]:
    recorder = EhrRecorder(fhir)
    yield recorder
    recorder.close()


@pytest.fixture
def rt(make_runtime: RuntimeFactory, ehr: EhrRecorder, api_server: ApiServer) -> Runtime:
    return make_runtime(fhir_base_url=ehr.base_url, public_url=api_server.url)


def _count(rt: Runtime, model: type) -> int:
    with rt.sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _nothing_stored(rt: Runtime) -> None:
    for model in (ResourceChangeRecord, ResourceVersion, Enrollment, SubscriptionStatus):
        assert _count(rt, model) == 0, model.__name__


def _send(api: ApiServer, method: str, raw_path: str, body: bytes | None = None
          ) -> httpx.Response:
    """The path exactly as written (percent-escapes kept), with the shared secret."""
    return httpx.request(method, f"{api.url}{raw_path}", content=body, headers=AUTH, timeout=30)


def _outcome(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/fhir+json"), response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["diagnostics"])


# A type or id that leaves the base or climbs out of its type (`..`, `.`), adds a query (`?`) or
# a fragment (`#`), or is longer than R4 allows (64), percent-encoded so that it reaches the route
# as written. (An encoded `/` never matches the route: Starlette decodes it into a segment.)
HOSTILE_PATHS = [
    pytest.param("%2E%2E/metadata", id="type-dotdot"),
    pytest.param("Appointment/%2E%2E", id="id-dotdot"),
    pytest.param("Appointment/%2E", id="id-dot"),
    pytest.param("Appointment/a1%3F_summary=count", id="id-query"),
    pytest.param("Appointment/a1%23frag", id="id-fragment"),
    pytest.param("Appointment/" + "a" * 65, id="id-65-long"),
    pytest.param("Appointment/a%00b", id="id-nul"),
    pytest.param("Appointment/%C3%A9", id="id-non-ascii"),
    pytest.param("appointment/a1", id="type-lowercase"),
    pytest.param("Appoint%20ment/a1", id="type-space"),
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_delete_for_a_type_or_id_outside_the_grammar_is_400_and_reaches_no_ehr(
    rt: Runtime, api_server: ApiServer, ehr: EhrRecorder, path: str
) -> None:
    response = _send(api_server, "DELETE", f"/fhir/notify/{path}")

    assert response.status_code == 400, response.text
    assert "FHIR" in _outcome(response)
    assert ehr.targets == []
    _nothing_stored(rt)


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_put_for_a_type_or_id_outside_the_grammar_is_400_and_reaches_no_ehr(
    rt: Runtime, api_server: ApiServer, ehr: EhrRecorder, path: str
) -> None:
    # The body agrees with the URL, as a forger would make it.
    rtype, _, rid = path.partition("/")
    resource = appointment("Patient/p1", FUTURE, aid=rid, version="1")
    resource["resourceType"] = rtype

    response = _send(api_server, "PUT", f"/fhir/notify/{path}", json.dumps(resource).encode())

    assert response.status_code == 400, response.text
    assert "FHIR" in _outcome(response)
    assert ehr.targets == []
    _nothing_stored(rt)


def test_a_65_character_id_trusted_without_an_ehr_is_400_not_500(
    make_runtime: RuntimeFactory, api_server: ApiServer
) -> None:
    rt = make_runtime(public_url=api_server.url)  # no EHR: the payload is trusted
    rid = "a" * 65
    resource = appointment("Patient/p1", FUTURE, aid=rid, version="1")

    response = _send(api_server, "PUT", f"/fhir/notify/Appointment/{rid}",
                     json.dumps(resource).encode())

    assert response.status_code == 400, response.text
    _nothing_stored(rt)


def test_a_genuine_notification_still_reads_only_under_the_base(
    rt: Runtime, api_server: ApiServer, ehr: EhrRecorder
) -> None:
    assert rt.ehr is not None
    real, _ = rt.ehr.create(appointment("Patient/p1", FUTURE))
    before = len(ehr.targets)

    response = _send(api_server, "PUT", f"/fhir/notify/Appointment/{real['id']}",
                     json.dumps(real).encode())

    assert response.status_code == 200, response.text
    assert "processed" in _outcome(response)
    assert ehr.targets[before:] == [f"/fhir/Appointment/{real['id']}"]
    assert ehr.outside_base() == []
    assert _count(rt, ResourceChangeRecord) == 1


def _nested(depth: int) -> bytes:
    return b'{"resourceType": "Appointment", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("body", [
    pytest.param(b"[" * 100_000, id="arrays-unclosed"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="arrays-closed"),
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="objects"),
    pytest.param(_nested(100_000), id="inside-a-resource"),
    pytest.param(_nested(65), id="65-levels"),
])
@pytest.mark.parametrize("method,path", [("PUT", "/fhir/notify/Appointment/a1"),
                                         ("POST", "/fhir/notify")])
def test_json_nested_too_deeply_is_400_saying_so(
    rt: Runtime, api_server: ApiServer, ehr: EhrRecorder, method: str, path: str, body: bytes
) -> None:
    response = _send(api_server, method, path, body)

    assert response.status_code == 400, response.text[:500]
    assert "nested too deeply" in _outcome(response)
    assert ehr.targets == []
    _nothing_stored(rt)


def test_json_nested_64_levels_is_still_read(rt: Runtime, api_server: ApiServer) -> None:
    # 64 levels in all: the resource's own object, then 63 arrays. It is not R4 (no such
    # element), and is refused for that reason, not for its depth.
    response = _send(api_server, "PUT", "/fhir/notify/Appointment/a1", _nested(63))

    assert response.status_code == 400
    assert "nested too deeply" not in _outcome(response)


@pytest.mark.parametrize("body", [
    pytest.param(b'{"resourceType": "Appointment", "id": "a1", "minutesDuration": '
                 + b"1" * 5000 + b"}", id="integer-of-5000-digits"),
    pytest.param(b'{"resourceType": "Appointment", "id": "a1", "minutesDuration": NaN}',
                 id="nan"),
    pytest.param(json.dumps({**appointment("Patient/p1", FUTURE, aid="a1", version="1"),
                             "description": "a\x00b"}).encode(), id="nul-escape"),
    pytest.param('{"resourceType": "Appointment"}'.encode("utf-16"), id="utf-16"),
])
def test_json_the_parser_or_the_database_would_choke_on_is_400(
    make_runtime: RuntimeFactory, api_server: ApiServer, body: bytes
) -> None:
    rt = make_runtime(public_url=api_server.url)  # trusted: the payload would be stored
    response = _send(api_server, "PUT", "/fhir/notify/Appointment/a1", body)

    assert response.status_code == 400, response.text[:500]
    _outcome(response)
    _nothing_stored(rt)


def _topic_bundle(focus: Any = None, subscription: Any = None) -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads((FIXTURES / "r4-event-id-only.json").read_text())
    params = bundle["entry"][0]["resource"]["parameter"]
    if subscription is not None:
        params[0]["valueReference"]["reference"] = subscription
    if focus is not None:
        event = next(p for p in params if p["name"] == "notification-event")
        next(p for p in event["part"] if p["name"] == "focus")["valueReference"] = focus
    return bundle


@pytest.mark.parametrize("bundle", [
    pytest.param(_topic_bundle({"reference": "https://ehr.example.org/fhir/../metadata"}),
                 id="focus-dotdot-type"),
    pytest.param(_topic_bundle({"reference": "Appointment/.."}), id="focus-dotdot-id"),
    pytest.param(_topic_bundle({"reference": "Appointment/a1?_summary=count"}),
                 id="focus-query"),
    pytest.param(_topic_bundle({"reference": "Appointment/" + "a" * 65}), id="focus-65-long"),
    pytest.param(_topic_bundle(subscription="Subscription/..?x=1"), id="subscription-query"),
    pytest.param(_topic_bundle({"reference": 5}), id="focus-not-a-string"),
    pytest.param({"resourceType": "Bundle", "type": "history", "entry": ["x"]},
                 id="entry-not-an-object"),
])
def test_a_topic_bundle_naming_a_hostile_reference_is_400_and_reaches_no_ehr(
    rt: Runtime, api_server: ApiServer, ehr: EhrRecorder, bundle: dict[str, Any]
) -> None:
    response = _send(api_server, "POST", "/fhir/notify", json.dumps(bundle).encode())

    assert response.status_code == 400, response.text
    _outcome(response)
    assert ehr.targets == []
    _nothing_stored(rt)


@pytest.mark.parametrize("resource_type,resource_id", [
    ("..", "metadata"), ("Appointment", ".."), ("Appointment", "a1?_summary=count"),
    ("Appointment", "."), ("Appointment", "a1#x"), ("Appointment", "a/b"), ("Appointment", ""),
    ("Appointment", "a" * 65), ("Appointment", "a\x00"), ("metadata", "x"),
])
def test_the_client_never_puts_an_unchecked_type_or_id_into_a_url(
    ehr: EhrRecorder, resource_type: str, resource_id: str
) -> None:
    with FhirClient(ehr.base_url) as client:
        with pytest.raises(InvalidResource, match="refused to request"):
            client.read(resource_type, resource_id)
        resource = {**appointment("Patient/p1", FUTURE), "resourceType": resource_type,
                    "id": resource_id}
        with pytest.raises(InvalidResource, match="refused to request"):
            client.update(resource)
    assert ehr.targets == []


def test_the_client_reads_a_valid_id_under_the_base(ehr: EhrRecorder) -> None:
    with FhirClient(ehr.base_url) as client:
        created, _ = client.create(appointment("Patient/p1", FUTURE))
        assert client.read("Appointment", created["id"])["id"] == created["id"]
    assert ehr.outside_base() == []
    assert urlparse(ehr.targets[-1]).path == f"/fhir/Appointment/{created['id']}"
