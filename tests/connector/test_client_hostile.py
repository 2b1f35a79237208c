"""FhirClient against a hostile or broken EHR over real HTTP (issue 14): a search's `next` link is
followed only under the configured FHIR base (our bearer token goes nowhere else), and an answer
nested or sized to crash the worker is a clear FhirError instead."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connector.client import FhirClient, RetryPolicy
from connector.errors import FhirError, FhirUnavailable
from tests.support.fhir_data import patient
from tests.support.fhir_server import FhirTestServer

TOKEN = "ehr-token-0123456789"
Answer = tuple[int, dict[str, str], Iterable[bytes]]


class HostileEhr:
    """A local HTTP server answering each path with what a test sets; every request it gets is
    recorded (path and Authorization header), and so is every byte it managed to send."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[], Answer]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.sent = 0
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                ehr.requests.append((self.path, self.headers.get("Authorization")))
                answer = ehr.answers.get(self.path) or ehr.answers.get(self.path.split("?")[0])
                status, headers, body = answer() if answer else (404, {}, [b"{}"])
                self.send_response(status)
                for name, value in {"Content-Type": "application/fhir+json", **headers}.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in body:
                        if "Content-Length" in headers:
                            self.wfile.write(chunk)
                        else:
                            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        ehr.sent += len(chunk)
                    if "Content-Length" not in headers:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the client hung up: what a refusal looks like
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def json(self, path: str, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.answers[path] = lambda: (status, {"Content-Length": str(len(data))}, [data])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def ehr() -> Iterator[HostileEhr]:
    server = HostileEhr()
    yield server
    server.close()


@pytest.fixture
def elsewhere() -> Iterator[HostileEhr]:
    """Another server: where a hostile next link would send our token."""
    server = HostileEhr()
    yield server
    server.close()


def _client(ehr: HostileEhr, **options: Any) -> FhirClient:
    return FhirClient(ehr.url("/fhir/R4"), token=TOKEN, retry=RetryPolicy(attempts=1),
                      **options)


def _bundle(*ids: str, next_url: Any = None) -> dict[str, Any]:
    links = [{"relation": "next", "url": next_url}] if next_url is not None else []
    return {"resourceType": "Bundle", "type": "searchset", "link": links,
            "entry": [{"resource": {"resourceType": "Patient", "id": i}} for i in ids]}


def test_a_next_link_to_another_server_is_refused_and_never_requested(
    ehr: HostileEhr, elsewhere: HostileEhr
) -> None:
    ehr.json("/fhir/R4/Patient", _bundle("p1", next_url=elsewhere.url("/fhir/R4/Patient?p=2")))
    elsewhere.json("/fhir/R4/Patient", _bundle("p2"))

    with _client(ehr) as client, pytest.raises(FhirError) as refused:
        list(client.search("Patient"))

    assert "next link outside the FHIR base" in str(refused.value)
    assert f"127.0.0.1:{elsewhere.port}/fhir/R4/Patient" in str(refused.value)
    assert "OUTREACH_FHIR_BASE_URL" in str(refused.value)
    assert elsewhere.requests == []  # our token never left for it


@pytest.mark.parametrize("next_url", [
    pytest.param("https://127.0.0.1:{port}/fhir/R4/Patient?p=2", id="another-scheme"),
    pytest.param("http://localhost:{port}/fhir/R4/Patient?p=2", id="another-host-name"),
    pytest.param("http://127.0.0.1:1/fhir/R4/Patient?p=2", id="another-port"),
    pytest.param("http://127.0.0.1:{port}/fhir/R5/Patient?p=2", id="another-path"),
    pytest.param("http://127.0.0.1:{port}/fhir/R4x/Patient", id="a-longer-prefix"),
    pytest.param("/admin?p=2", id="root-relative"),
    pytest.param("http://127.0.0.1:{port}/fhir/R4/../../admin", id="dot-segments"),
    pytest.param("http://127.0.0.1:{port}/fhir/R4/%2e%2e/%2E%2E/admin", id="encoded-dots"),
    pytest.param("http://user:pw@127.0.0.1:{port}/fhir/R4/Patient", id="user-info"),
    pytest.param("//127.0.0.1:1/fhir/R4/Patient", id="scheme-relative"),
    pytest.param("http://127.0.0.1:notaport/fhir/R4/Patient", id="bad-port"),
    pytest.param("javascript:alert(1)", id="not-http"),
    pytest.param(12, id="not-a-string"),
])
def test_a_next_link_outside_the_base_is_refused(ehr: HostileEhr, next_url: Any) -> None:
    if isinstance(next_url, str):
        next_url = next_url.replace("{port}", str(ehr.port))
    ehr.json("/fhir/R4/Patient", _bundle("p1", next_url=next_url))
    ehr.answers["/admin"] = lambda: (200, {}, [b'{"resourceType": "Bundle"}'])

    with _client(ehr) as client:
        pages = client.search("Patient")
        assert next(pages)["id"] == "p1"  # the first page is ours
        with pytest.raises(FhirError, match="next link outside the FHIR base"):
            next(pages)

    assert [path for path, _ in ehr.requests] == ["/fhir/R4/Patient"]


@pytest.mark.parametrize("next_url", [
    pytest.param("http://127.0.0.1:{port}/fhir/R4/Patient?p=2", id="absolute"),
    pytest.param("HTTP://127.0.0.1:{port}/fhir/R4/Patient?p=2", id="scheme-in-capitals"),
    pytest.param("Patient?p=2", id="relative"),
    pytest.param("http://127.0.0.1:{port}/fhir/R4?p=2", id="the-base-itself-hapi-style"),
])
def test_a_next_link_under_the_base_is_followed(ehr: HostileEhr, next_url: str) -> None:
    next_url = next_url.replace("{port}", str(ehr.port))
    page = {"/fhir/R4/Patient?p=2", "/fhir/R4?p=2"}
    ehr.answers["/fhir/R4/Patient"] = lambda: (200, {}, [json.dumps(_bundle(
        "p1", next_url=next_url)).encode()])
    for path in page:
        ehr.json(path, _bundle("p2"))

    with _client(ehr) as client:
        assert [p["id"] for p in client.search("Patient")] == ["p1", "p2"]

    assert [auth for _, auth in ehr.requests] == [f"Bearer {TOKEN}"] * 2


def test_the_real_servers_next_links_are_followed(fhir: FhirTestServer) -> None:
    with FhirClient(fhir.base_url) as client:
        created = {client.create(patient(given=f"Paged{n}", email=None))[0]["id"] for n in range(3)}
        found = {p["id"] for p in client.search("Patient", {"_count": 1})}
    assert created <= found


def _nested(depth: int) -> bytes:
    return b'{"resourceType": "Patient", "extension": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_an_answer_nested_to_crash_the_parser_is_a_fhir_error(
    ehr: HostileEhr, depth: int
) -> None:
    body = _nested(depth)
    ehr.answers["/fhir/R4/Patient/p1"] = lambda: (200, {}, [body])

    with _client(ehr) as client, pytest.raises(FhirError, match="nested too deeply"):
        client.read("Patient", "p1")


def test_an_error_answer_nested_deeply_is_still_the_error(ehr: HostileEhr) -> None:
    body = _nested(100_000)
    ehr.answers["/fhir/R4/Patient/p1"] = lambda: (503, {}, [body])

    with _client(ehr) as client, pytest.raises(FhirUnavailable) as unavailable:
        client.read("Patient", "p1")
    assert unavailable.value.status == 503


def test_an_endless_answer_is_refused_once_past_the_limit(ehr: HostileEhr) -> None:
    def endless() -> Iterator[bytes]:
        yield b'{"resourceType": "Patient", "text": "'
        for _ in range(10_000):  # 640 MB, streamed with no declared length
            yield b"a" * 65_536

    ehr.answers["/fhir/R4/Patient/p1"] = lambda: (200, {}, endless())

    with _client(ehr, max_response_bytes=1 << 20) as client, \
            pytest.raises(FhirError, match=r"larger than 1048576 bytes"):
        client.read("Patient", "p1")
    assert ehr.sent < 64 << 20, "the client must stop reading once past its limit"


def test_a_declared_length_over_the_limit_is_refused_before_the_body(ehr: HostileEhr) -> None:
    ehr.answers["/fhir/R4/Patient/p1"] = lambda: (
        200, {"Content-Length": str(1 << 30)}, [b"{}"])

    with _client(ehr, max_response_bytes=1 << 20) as client, \
            pytest.raises(FhirError, match="larger than"):
        client.read("Patient", "p1")


def test_broken_bundle_entries_are_skipped_not_a_crash(ehr: HostileEhr) -> None:
    ehr.json("/fhir/R4/Patient", {"resourceType": "Bundle", "entry": [
        "not an entry", {"resource": "not a resource"}, {"search": "x", "resource": {
            "resourceType": "Patient", "id": "p1"}},
        {"resource": {"resourceType": "Patient", "id": "p2"}, "search": {"mode": "include"}},
    ], "link": "not a list"})

    with _client(ehr) as client:
        assert [p["id"] for p in client.search("Patient")] == ["p1"]
