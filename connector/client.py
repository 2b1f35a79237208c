"""The FHIR REST client: one httpx client, errors mapped to connector.errors, paging."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from connector.errors import (
    FhirConflict,
    FhirError,
    FhirNotFound,
    FhirPreconditionFailed,
    FhirUnavailable,
)

FHIR_JSON = "application/fhir+json"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


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
    if status in (429, 502, 503, 504) or status >= 500:
        raise FhirUnavailable(message, status=status, outcome=outcome,
                              retry_after=_retry_after(response))
    errors: dict[int, type[FhirError]] = {
        404: FhirNotFound, 410: FhirNotFound, 409: FhirConflict, 412: FhirPreconditionFailed,
    }
    raise errors.get(status, FhirError)(message, status=status, outcome=outcome)


class FhirClient:
    """Talks to one FHIR R4 server. Network failures and 429/5xx raise FhirUnavailable, which
    callers treat as "try again later"; nothing is swallowed."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url + "/", headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise FhirUnavailable(f"{method} {url}: {type(exc).__name__}") from exc
        _raise_for(response)
        return response

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise FhirError(f"server answered non-JSON ({response.status_code})") from exc
        if not isinstance(body, dict):
            raise FhirError("server answered JSON that is not a resource")
        return body

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return self._json(self._request("GET", f"{resource_type}/{resource_id}"))

    def capabilities(self) -> dict[str, Any]:
        return self._json(self._request("GET", "metadata"))

    def search(
        self, resource_type: str, params: Mapping[str, str | int] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every matching resource (search mode `match`), following `next` links page by page."""
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
        match instead of creating a duplicate. Returns (resource, created)."""
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
        url = f"{resource['resourceType']}/{resource['id']}"
        return self._json(self._request("PUT", url, json=resource, headers=headers))
