"""Auth to the EHR: SMART Backend Services (client_credentials + private_key_jwt) as httpx.Auth.

Static bearer tokens and no auth need no class: FhirClient takes `token=` or nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connector.errors import FhirAuthError, FhirUnavailable, FhirUnsupported

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART: the assertion's exp is no more than five minutes in the future.
ASSERTION_LIFETIME_S = 300
# Renew this long before the token expires, so a request never carries an expired one.
RENEW_MARGIN_S = 30.0

log = logging.getLogger(__name__)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def load_private_key(pem: bytes) -> tuple[PrivateKey, str]:
    """The key and its SMART algorithm: RSA → RS384, EC P-384 → ES384; anything else refused."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValueError("RSA keys for SMART Backend Services must be at least 2048 bits")
        return key, "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return key, "ES384"
    raise ValueError("SMART Backend Services needs an RSA (RS384) or EC P-384 (ES384) key")


def _b64(number: int, length: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(length, "big")).rstrip(b"=").decode()


def public_jwk(key: PrivateKey, alg: str) -> dict[str, str]:
    """The public key as a JWK, `kid` = its RFC 7638 thumbprint: what to register with the EHR."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        jwk = {"e": _b64(numbers.e, (numbers.e.bit_length() + 7) // 8), "kty": "RSA",
               "n": _b64(numbers.n, (numbers.n.bit_length() + 7) // 8)}
    else:
        point = key.public_key().public_numbers()
        jwk = {"crv": "P-384", "kty": "EC", "x": _b64(point.x, 48), "y": _b64(point.y, 48)}
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=")
    return {**jwk, "kid": thumbprint.decode(), "alg": alg, "use": "sig"}


def client_assertion(key: PrivateKey, alg: str, client_id: str, audience: str, key_id: str,
                     now: float) -> str:
    """A private_key_jwt client assertion (RFC 7523, as SMART profiles it): issued by and about
    the client, for one token endpoint, valid five minutes, with a fresh `jti`."""
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": int(now),
              "exp": int(now) + ASSERTION_LIFETIME_S, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": key_id, "typ": "JWT"})


class SmartBackendAuth(httpx.Auth):
    """Gets an access token with a signed client assertion, caches it no longer than its
    `expires_in` allows, and fetches a fresh one on expiry or on a 401."""

    def __init__(
        self,
        fhir_base_url: str,
        client_id: str,
        private_key_pem: bytes,
        *,
        scope: str,
        key_id: str | None = None,
        token_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key, self.alg = load_private_key(private_key_pem)
        self.client_id, self.scope = client_id, scope
        self.key_id = key_id or public_jwk(self._key, self.alg)["kid"]
        self._base = fhir_base_url.rstrip("/")
        self._token_url = token_url
        self._clock = clock
        self._http = httpx.Client(timeout=10.0, transport=transport)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:  # revoked or expired early: one fresh token, one retry
            self.invalidate()
            request.headers["Authorization"] = f"Bearer {self.token()}"
            yield request

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._token, self._renew_at = self._fetch()
            return self._token

    def token_url(self) -> str:
        if self._token_url is None:
            self._token_url = self._discover()
        return self._token_url

    def _discover(self) -> str:
        config = self._get_json(f"{self._base}/.well-known/smart-configuration")
        endpoint = config.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise FhirUnsupported("the EHR's smart-configuration names no token_endpoint")
        methods = config.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            raise FhirUnsupported("the EHR's token endpoint does not accept private_key_jwt")
        algs = config.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algs, list) and self.alg not in algs:
            raise FhirUnsupported(f"the EHR's token endpoint does not accept {self.alg} "
                                  f"assertions (it lists {', '.join(map(str, algs))})")
        return endpoint

    def assertion(self) -> str:
        return client_assertion(self._key, self.alg, self.client_id, self.token_url(),
                                self.key_id, self._clock())

    def _fetch(self) -> tuple[str, float]:
        fetched_at = self._clock()
        form = {"grant_type": "client_credentials", "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()}
        body = self._post_form(self.token_url(), form)
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int | float):
            raise FhirAuthError("token endpoint answered without access_token/expires_in")
        log.info("SMART access token obtained for client %s, valid %s s", self.client_id,
                 expires_in)
        return token, fetched_at + expires_in - min(RENEW_MARGIN_S, expires_in / 10)

    def _get_json(self, url: str) -> dict[str, Any]:
        return self._answer(lambda: self._http.get(url, headers={"Accept": "application/json"}))

    def _post_form(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        return self._answer(lambda: self._http.post(url, data=form))

    def _answer(self, call: Callable[[], httpx.Response]) -> dict[str, Any]:
        try:
            response = call()
        except httpx.TransportError as exc:
            raise FhirUnavailable(f"token service: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise FhirUnavailable(f"token service answered {response.status_code}",
                                  status=response.status_code)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.is_success or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise FhirAuthError(f"token service refused: {response.status_code} {error or ''}",
                                status=response.status_code)
        return body
