"""The FHIR REST client: one httpx client, bounded retries, errors mapped to connector.errors."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from connector.errors import (
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirPreconditionFailed,
    FhirUnavailable,
    InvalidResource,
)
from connector.resources import parse_json

FHIR_JSON = "application/fhir+json"
# The most a response may hold: a hostile or broken EHR must not exhaust the worker's memory
# (a search page of a few hundred resources is a few MB). Its depth is bounded as our own
# requests' are (connector.resources.MAX_DEPTH): no RecursionError from a nested answer.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Methods a server may see twice without a second effect (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_OPERATION_PATH = re.compile(r"[A-Z][A-Za-z]{0,63}/\$[a-z][a-z-]{0,63}")

log = logging.getLogger(__name__)

# R4's grammar for a resource type name and a logical id (datatypes.html#id). Nothing else goes
# into a URL path on the EHR: there `..`, `/`, `?` or `#` would reach another resource or
# endpoint outside the base, or add a query.
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}", re.ASCII)
RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}", re.ASCII)


def reference_problem(resource_type: str, resource_id: str) -> str | None:
    """Why `resource_type/resource_id` is not an R4 type name and id, or None when it is."""
    if not RESOURCE_TYPE.fullmatch(resource_type):
        return "the resource type is not a FHIR type name ([A-Z][A-Za-z]{1,63})"
    if not RESOURCE_ID.fullmatch(resource_id) or resource_id in (".", ".."):
        # `.` and `..` fit R4's pattern, but in a URL they are path segments, not an id.
        return "the resource id is not a FHIR id (1 to 64 of A-Z a-z 0-9 - ., not . or ..)"
    return None


def checked_path(resource_type: str, resource_id: str) -> str:
    """`Type/id` for a URL under the FHIR base; InvalidResource when either part could leave it."""
    problem = reference_problem(resource_type, resource_id)
    if problem is not None:
        raise InvalidResource(f"{problem}: refused to request {resource_type[:70]!r}/"
                              f"{resource_id[:70]!r}")
    return f"{resource_type}/{resource_id}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries for 429/5xx/network failures: full-jitter exponential backoff, or the
    server's Retry-After when it gives one. A Retry-After longer than `max_retry_after` is not
    waited for in-line: the error is raised and the caller (poll, write-back) tries later."""

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


class FhirApi(Protocol):
    """What the service asks of an EHR: reads, searches, writes. FhirClient is the real one;
    the demo's EHR and test doubles provide the same methods."""

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        ...

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]: ...

    def search(
        self, resource_type: str, params: Mapping[str, str | int | list[str]] | None = None
    ) -> Iterator[dict[str, Any]]: ...

    def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]: ...

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        ...


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:  # the HTTP-date form
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _outcome(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = parse_json(response.content)
    except InvalidResource:
        return None
    is_outcome = isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
    return body if is_outcome else None


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    status, outcome = response.status_code, _outcome(response)
    message = f"{response.request.method} {response.request.url.path} → {status}"
    if status == 429 or status >= 500:
        raise FhirUnavailable(message, status=status, outcome=outcome,
                              retry_after=_retry_after(response))
    errors: dict[int, type[FhirError]] = {
        404: FhirNotFound, 410: FhirNotFound, 409: FhirConflict, 412: FhirPreconditionFailed,
    }
    raise errors.get(status, FhirError)(message, status=status, outcome=outcome)


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int]:
    return scheme.lower(), (host or "").lower(), port or _DEFAULT_PORTS.get(scheme.lower(), 0)


def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed response, refused (FhirError) past `limit` bytes: declared or
    not, no more than that is ever held."""
    declared = response.headers.get("Content-Length", "")
    too_large = FhirError(f"{response.request.method} {response.request.url.path}: the "
                          f"server's answer is larger than {limit} bytes; refused")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _retryable(method: str, headers: Mapping[str, str] | None) -> bool:
    # A conditional create is safe to repeat: the second POST finds the first one's result.
    conditional = bool(headers and "If-None-Exist" in headers)
    return method in IDEMPOTENT or (method == "POST" and conditional)


class FhirClient:
    """Talks to one FHIR R4 server. Idempotent requests (and conditional creates) are retried a
    bounded number of times; what still fails raises FhirUnavailable ("try again later")."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        auth: httpx.Auth | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.max_response_bytes = max_response_bytes
        base = urlsplit(self.base_url)
        self._base_origin = _origin(base.scheme, base.hostname, base.port)
        self._base_path = base.path.rstrip("/")
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url + "/", headers=headers, auth=auth, transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            request = self._http.build_request(method, url, **kwargs)
            streamed = self._http.send(request, stream=True)
            try:
                body = _read_bounded(streamed, self.max_response_bytes)
            finally:
                streamed.close()
        except httpx.TransportError as exc:
            raise FhirUnavailable(f"{method} {url}: {type(exc).__name__}") from exc
        response = httpx.Response(streamed.status_code, headers=streamed.headers, content=body,
                                  request=streamed.request)
        _raise_for(response)
        return response

    def _request(self, method: str, url: str, *, retryable: bool | None = None,
                 **kwargs: Any) -> httpx.Response:
        if retryable is None:
            retryable = _retryable(method, kwargs.get("headers"))
        attempts = self.retry.attempts if retryable else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._send_once(method, url, **kwargs)
            except FhirUnavailable as exc:
                too_long = (exc.retry_after or 0) > self.retry.max_retry_after
                if attempt == attempts or too_long:
                    raise
                wait = self.retry.delay(attempt, exc.retry_after)
                log.info("%s %s: %s; retry %d/%d in %.2f s", method, url.split("?")[0],
                         exc.status or "network error", attempt, attempts - 1, wait)
                self._sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        """The answer as a JSON object; FhirError for anything else, including JSON nested
        deeper than any resource (parsed without recursion: never a RecursionError)."""
        try:
            body = parse_json(response.content)
        except InvalidResource as exc:
            raise FhirError(f"server answered non-JSON or JSON we do not accept "
                            f"({response.status_code}): {exc}") from exc
        if not isinstance(body, dict):
            raise FhirError("server answered JSON that is not a resource")
        return body

    def _next_page(self, bundle: dict[str, Any]) -> str | None:
        """The Bundle's `next` link, as an absolute URL under our FHIR base (same scheme, host,
        port and path); FhirError for one that leads anywhere else, where our credentials
        would follow it."""
        links = bundle.get("link")
        url = next((link.get("url") for link in links if isinstance(link, dict)
                    and link.get("relation") == "next"), None) if isinstance(links, list) else None
        if not url:
            return None
        try:
            absolute = urljoin(self.base_url + "/", url) if isinstance(url, str) else ""
            parts = urlsplit(absolute)
            origin = _origin(parts.scheme, parts.hostname, parts.port)
        except ValueError:  # not a URL (a port that is not a number, a broken IPv6 host)
            absolute, parts, origin = "", urlsplit(""), ("", "", 0)
        inside = (origin == self._base_origin and parts.username is None
                  and (parts.path == self._base_path
                       or parts.path.startswith(self._base_path + "/"))
                  # `..`, also percent-encoded, would climb out of the base on the server
                  and not {".", ".."} & set(unquote(parts.path).split("/")))
        if not inside:
            shown = f"{origin[0]}://{origin[1]}:{origin[2]}{parts.path[:100]}" if origin[0] \
                else repr(str(url)[:100])
            raise FhirError(f"refused to follow a search's next link outside the FHIR base "
                            f"{self.base_url} (to {shown}); if the EHR names itself "
                            "differently, set OUTREACH_FHIR_BASE_URL to the base it uses")
        return absolute.split("#")[0]

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        """GET any path under the base (an operation such as `Subscription/x/$events`)."""
        return self._json(self._request("GET", path, params=dict(params or {})))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """InvalidResource, and no request, for a type or id that could leave the base."""
        return self.get(checked_path(resource_type, resource_id))

    def capabilities(self) -> dict[str, Any]:
        return self.get("metadata")

    def operation(self, path: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """POST a `Parameters` body to a type-level operation (`Appointment/$find`). Never
        retried: `$hold` and `$book` change state, and a second POST after a lost answer could
        hold or book twice. InvalidResource, and no request, for a path of another shape."""
        if not _OPERATION_PATH.fullmatch(path):
            raise InvalidResource(f"not a type-level operation path: {path[:80]!r}")
        response = self._request("POST", path, json=parameters,
                                 headers={"Content-Type": FHIR_JSON})
        return self._json(response)

    def search(
        self, resource_type: str, params: Mapping[str, str | int | list[str]] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every matching resource (search mode `match`), following `next` links page by page.
        A list value repeats the parameter (`date=ge…&date=le…`)."""
        response = self._request("GET", resource_type, params=dict(params or {}))
        while True:
            bundle = self._json(response)
            entries = bundle.get("entry")
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                    continue  # a broken entry is no resource of ours
                search = entry.get("search")
                mode = search.get("mode", "match") if isinstance(search, dict) else "match"
                if mode == "match":
                    yield entry["resource"]
            next_url = self._next_page(bundle)
            if not next_url:
                return
            response = self._request("GET", next_url)

    def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """POST a resource; with `if_none_exist` (a search query) the server returns the existing
        match instead of creating a duplicate, and only then is the POST retried. Returns
        (resource, created)."""
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = self._request(
            "POST", resource["resourceType"], json=resource, headers=headers
        )
        return self._json(response), response.status_code == 201

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = if_match
        url = checked_path(str(resource["resourceType"]), str(resource["id"]))
        return self._json(self._request("PUT", url, json=resource, headers=headers))

    def transaction(self, bundle: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST a transaction Bundle to the base: all its entries or none, in one round trip.
        Retried like a conditional create only when the caller says every entry is safe to
        repeat (conditional creates, PUTs); returns the transaction-response Bundle."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise InvalidResource("not a transaction Bundle")
        # No `Prefer: return=minimal`: the response Bundle must still come, and some servers
        # then send none.
        headers = {"Content-Type": FHIR_JSON}
        response = self._request("POST", "", json=bundle, headers=headers, retryable=idempotent)
        return self._json(response)
