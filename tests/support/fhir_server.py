"""Start and control the real FHIR R4 test server in ``tests/fhir_server`` (see its README).

The server is Medplum's FHIR engine in a Node process; this module installs it with npm when
needed, starts it on a free port and talks to its ``/$admin/`` endpoints.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx

SERVER_DIR = Path(__file__).resolve().parent.parent / "fhir_server"
NODE = SERVER_DIR / "node_modules" / ".bin" / "node"
# npm writes this at the end of a successful install, so it marks a complete node_modules.
INSTALL_MARKER = SERVER_DIR / "node_modules" / ".package-lock.json"
INSTALL_TIMEOUT_S = 600.0


class FhirServerError(RuntimeError):
    """The FHIR test server could not be installed, started or controlled."""


def _install_needed() -> bool:
    if not NODE.exists() or not INSTALL_MARKER.exists():
        return True
    lockfile = SERVER_DIR / "package-lock.json"
    return INSTALL_MARKER.stat().st_mtime < lockfile.stat().st_mtime


def ensure_installed() -> None:
    """Run ``npm ci`` in tests/fhir_server unless node_modules is complete and up to date.

    A file lock outside the work tree keeps parallel test processes from installing at once;
    whoever waited re-checks and finds the install done.
    """
    if not _install_needed():
        return
    digest = hashlib.sha256(str(SERVER_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"fhir-outreach-npm-{digest}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _install_needed():
                return
            try:
                result = subprocess.run(
                    ["npm", "ci", "--no-audit", "--no-fund"],
                    cwd=SERVER_DIR,
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise FhirServerError(f"npm ci in {SERVER_DIR} failed: {exc}") from exc
            if result.returncode != 0 or not NODE.exists():
                raise FhirServerError(
                    f"npm ci in {SERVER_DIR} failed (exit {result.returncode}):\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class FhirTestServer:
    """One server process on 127.0.0.1 with a free port.

    ``env`` adds environment variables for the server, e.g. ``RESTHOOK_RETRY_SECONDS``.
    """

    def __init__(
        self, *, env: Mapping[str, str] | None = None, startup_timeout: float = 60.0
    ) -> None:
        self._env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._client: httpx.Client | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._process is not None:
            raise FhirServerError("FHIR test server already started")
        ensure_installed()
        # A file, not a pipe: nobody reads stderr while the server runs, and a full pipe would
        # block it. Kept open for the server's lifetime and closed in stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            [str(NODE), "server.mjs", "--port", "0", "--exit-on-stdin-close"],
            cwd=SERVER_DIR,
            # The server exits when this pipe closes, so it cannot outlive a crashed test run.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **self._env},
        )
        atexit.register(self.stop)
        try:
            self._port = self._read_port()
        except BaseException:
            self.stop()
            raise
        self._client = httpx.Client(base_url=self.admin_url, timeout=10.0)

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + self._startup_timeout
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FhirServerError(
                    f"FHIR test server did not start within {self._startup_timeout:.0f} s"
                    + self._stderr_tail()
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self._process.wait(timeout=5)
                raise FhirServerError(
                    f"FHIR test server exited with code {code} before listening"
                    + self._stderr_tail()
                )
            buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
        keyword, _, port = line.partition(" ")
        if keyword != "LISTENING" or not port.isdigit():
            raise FhirServerError(f"unexpected first line from FHIR test server: {line!r}")
        return int(port)

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")[-4000:]
        return f"; stderr:\n{text}" if text else "; stderr was empty"

    def stop(self) -> None:
        """Stop the server; safe to call more than once."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._port = None
        atexit.unregister(self.stop)

    def __enter__(self) -> FhirTestServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise FhirServerError("FHIR test server is not running")
        return self._port

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """FHIR base URL, e.g. ``http://127.0.0.1:PORT/fhir``."""
        return f"{self.admin_url}/fhir"

    # -- admin endpoints ---------------------------------------------------------------------

    def _admin(self, method: str, path: str, json: object = None) -> Any:
        if self._client is None:
            raise FhirServerError("FHIR test server is not running")
        response = self._client.request(method, f"/$admin/{path}", json=json)
        if response.status_code != 200:
            raise FhirServerError(
                f"{method} /$admin/{path} answered {response.status_code}: {response.text}"
            )
        return response.json()

    def reset(self) -> None:
        """Delete all resources, subscriptions and the delivery log."""
        self._admin("POST", "reset")

    def outage(
        self, status: int | None, *, count: int | None = None, after: int = 0,
        retry_after: float | None = None,
    ) -> None:
        """Make /fhir requests answer ``status`` (e.g. 503) until called with None.

        ``after`` lets that many requests through first; ``count`` ends the outage by itself
        after that many failures; ``retry_after`` adds a ``Retry-After`` header (seconds).
        """
        self._admin("POST", "outage", {"status": status, "count": count, "after": after,
                                       "retryAfter": retry_after})

    def features(
        self, *, without_search_params: list[str] | None = None, ihe_scheduling: bool = False,
        without_resources: list[str] | None = None, silent_metadata: bool = False,
        topics: list[str] | None = None, without_transactions: bool = False,
        write_delay_ms: int = 0, max_transaction_entries: int = 0,
    ) -> None:
        """Behave like another kind of EHR until reset (each call replaces the last):
        ``without_search_params``, e.g. ``_lastUpdated``, leave the CapabilityStatement and
        searching by them answers 400; ``without_resources``, e.g. ``Subscription``, leave it
        and any request for that type answers 400; ``silent_metadata`` lists no resources at all
        (a CapabilityStatement that says nothing); ``ihe_scheduling`` advertises and answers the
        IHE ITI Scheduling operations Appointment ``$find``, ``$hold`` and ``$book``;
        ``topics`` are advertised as Backport IG SubscriptionTopic canonicals;
        ``without_transactions`` lists no transaction/batch and refuses Bundles POSTed to the
        base (400); ``write_delay_ms`` holds every write that long first (a slow EHR write
        path; reads still answer meanwhile); ``max_transaction_entries`` refuses (400) a
        transaction Bundle with more entries (an EHR that caps a transaction's size)."""
        self._admin("POST", "features", {"withoutSearchParams": without_search_params or [],
                                         "withoutResources": without_resources or [],
                                         "silentMetadata": silent_metadata,
                                         "topics": topics or [],
                                         "iheScheduling": ihe_scheduling,
                                         "withoutTransactions": without_transactions,
                                         "writeDelayMs": write_delay_ms,
                                         "maxTransactionEntries": max_transaction_entries})

    def epic_like(self) -> None:
        """An Epic-like EHR: no Subscription resource (push-less) and no `_lastUpdated` search
        (so Appointments are polled by a date window)."""
        self.features(without_search_params=["_lastUpdated"], without_resources=["Subscription"])

    def smart(self, client_id: str, jwks: dict[str, Any], *, token_lifetime: int = 300) -> None:
        """Require SMART Backend Services tokens from now until reset: ``client_id`` with the
        public keys in ``jwks`` may get tokens valid ``token_lifetime`` seconds at
        ``/auth/token`` (named by ``/fhir/.well-known/smart-configuration``)."""
        self._admin("POST", "smart", {"clientId": client_id, "jwks": jwks,
                                      "tokenLifetime": token_lifetime})

    def token_requests(self) -> list[dict[str, Any]]:
        """Token requests so far: ``ok`` and either ``scope`` or ``error`` (why it was refused)."""
        result: list[dict[str, Any]] = self._admin("GET", "smart")["requests"]
        return result

    def heartbeat(self) -> int:
        """Send a heartbeat notification on every active topic-based subscription now."""
        sent: int = self._admin("POST", "heartbeat")["sent"]
        return sent

    def drop_topic_events(self, count: int) -> None:
        """Lose the next ``count`` topic event notifications (they still count, and `$events`
        still returns them): how a gap looks to the receiver."""
        self._admin("POST", "topic-drop", {"count": count})

    def requests(self) -> list[dict[str, str]]:
        """Every /fhir request since the last reset or :meth:`clear_requests`, oldest first:
        ``method``, ``path`` (under the base, e.g. ``/Appointment``) and ``query``."""
        result: list[dict[str, str]] = self._admin("GET", "requests")
        return result

    def clear_requests(self) -> None:
        self._admin("DELETE", "requests")

    def deliveries(self) -> list[dict[str, Any]]:
        """Rest-hook delivery attempts so far, oldest first.

        Each has subscription, resource, action, method, url, attempt, time and either
        status (HTTP status received) or error (connection error text).
        """
        result: list[dict[str, Any]] = self._admin("GET", "deliveries")
        return result

    def wait_for_deliveries(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Poll :meth:`deliveries` until ``predicate`` holds; deliveries are asynchronous."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.deliveries()
            if predicate(found):
                return found
            if time.monotonic() > deadline:
                raise FhirServerError(f"deliveries did not reach the expected state: {found}")
            time.sleep(0.05)


def fhir_server_session(env: Mapping[str, str] | None = None) -> Iterator[FhirTestServer]:
    """Generator for a session-scoped pytest fixture: one started server, stopped at the end."""
    server = FhirTestServer(env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()
