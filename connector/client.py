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

import httpx

from connector.errors import (
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirPreconditionFailed,
    FhirUnavailable,
    InvalidResource,
)

FHIR_JSON = "application/fhir+json"
# Methods a server may see twice without a second effect (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

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
        body = response.json()
    except ValueError:
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
    ) -> None:
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.retry = retry
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
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise FhirUnavailable(f"{method} {url}: {type(exc).__name__}") from exc
        _raise_for(response)
        return response

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempts = self.retry.attempts if _retryable(method, kwargs.get("headers")) else 1
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
        try:
            body = response.json()
        except ValueError as exc:
            raise FhirError(f"server answered non-JSON ({response.status_code})") from exc
        if not isinstance(body, dict):
            raise FhirError("server answered JSON that is not a resource")
        return body

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        """GET any path under the base (an operation such as `Subscription/x/$events`)."""
        return self._json(self._request("GET", path, params=dict(params or {})))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """InvalidResource, and no request, for a type or id that could leave the base."""
        return self.get(checked_path(resource_type, resource_id))

    def capabilities(self) -> dict[str, Any]:
        return self.get("metadata")

    def search(
        self, resource_type: str, params: Mapping[str, str | int | list[str]] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every matching resource (search mode `match`), following `next` links page by page.
        A list value repeats the parameter (`date=ge…&date=le…`)."""
        response = self._request("GET", resource_type, params=dict(params or {}))
        while True:
            bundle = self._json(response)
            for entry in bundle.get("entry", []):
                if entry.get("search", {}).get("mode", "match") == "match" and "resource" in entry:
                    yield entry["resource"]
            next_url = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"),
                None,
            )
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
