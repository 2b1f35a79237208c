"""SMART Backend Services against the test server's token endpoint, which checks the assertion's
signature (RS384 / ES384) and claims independently of the library that signed it."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connector.auth import ASSERTION_LIFETIME_S, SmartBackendAuth, load_private_key, public_jwk
from connector.client import NO_RETRY, FhirClient
from connector.errors import FhirAuthError, FhirUnsupported
from tests.support.fhir_server import FhirTestServer

CLIENT_ID = "outreach-test-client"
SCOPE = "system/Appointment.rs system/Communication.cu"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PEM = pem(ec.generate_private_key(ec.SECP384R1()))


def register(fhir: FhirTestServer, *pems: bytes, lifetime: int = 300) -> None:
    keys = [public_jwk(*load_private_key(p)) for p in pems]
    fhir.smart(CLIENT_ID, {"keys": keys}, token_lifetime=lifetime)


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def client(fhir: FhirTestServer, key: bytes, clock: Clock) -> FhirClient:
    auth = SmartBackendAuth(fhir.base_url, CLIENT_ID, key, scope=SCOPE, clock=clock)
    return FhirClient(fhir.base_url, auth=auth, retry=NO_RETRY)


@pytest.fixture
def smart_rsa(fhir: FhirTestServer, clock: Clock) -> Iterator[FhirClient]:
    register(fhir, RSA_PEM, EC_PEM)
    with client(fhir, RSA_PEM, clock) as c:
        yield c


@pytest.mark.parametrize(("key", "alg"), [(RSA_PEM, "RS384"), (EC_PEM, "ES384")])
def test_token_is_obtained_with_a_verified_assertion(
    fhir: FhirTestServer, clock: Clock, key: bytes, alg: str
) -> None:
    register(fhir, RSA_PEM, EC_PEM)
    with client(fhir, key, clock) as c:
        assert list(c.search("Patient")) == []
        auth = c._http.auth
        assert isinstance(auth, SmartBackendAuth) and auth.alg == alg

    assert fhir.token_requests() == [{"ok": True, "scope": SCOPE}]


def test_without_a_token_the_server_refuses(fhir: FhirTestServer) -> None:
    register(fhir, RSA_PEM)
    with FhirClient(fhir.base_url, retry=NO_RETRY) as anonymous, pytest.raises(
        Exception, match="401"
    ):
        anonymous.read("Patient", "x")


def test_token_is_cached_until_expires_in_then_renewed(
    fhir: FhirTestServer, clock: Clock
) -> None:
    register(fhir, RSA_PEM, lifetime=60)
    clock.now -= 60  # the fake clock then advances without outrunning the server's real one
    with client(fhir, RSA_PEM, clock) as c:
        for _ in range(3):
            list(c.search("Patient"))
        assert len(fhir.token_requests()) == 1
        clock.now += 55  # inside expires_in but past the renewal margin
        list(c.search("Patient"))
    assert len(fhir.token_requests()) == 2


def test_each_assertion_is_fresh_and_short_lived(fhir: FhirTestServer, clock: Clock) -> None:
    register(fhir, EC_PEM)
    auth = SmartBackendAuth(fhir.base_url, CLIENT_ID, EC_PEM, scope=SCOPE, clock=clock)
    first, second = auth.assertion(), auth.assertion()
    claims = [jwt.decode(a, options={"verify_signature": False}) for a in (first, second)]

    assert claims[0]["jti"] != claims[1]["jti"]
    assert claims[0]["exp"] - claims[0]["iat"] <= ASSERTION_LIFETIME_S
    assert claims[0]["aud"] == auth.token_url() and auth.token_url().endswith("/auth/token")
    assert claims[0]["iss"] == claims[0]["sub"] == CLIENT_ID
    assert jwt.get_unverified_header(first)["kid"] == public_jwk(*load_private_key(EC_PEM))["kid"]


def test_a_revoked_token_is_replaced_once_on_401(
    fhir: FhirTestServer, smart_rsa: FhirClient
) -> None:
    list(smart_rsa.search("Patient"))
    register(fhir, RSA_PEM, EC_PEM)  # forgets every issued token

    assert list(smart_rsa.search("Patient")) == []
    assert len(fhir.token_requests()) == 1  # the re-registration cleared the log; one new token


def test_an_unregistered_key_is_refused_with_the_reason(fhir: FhirTestServer, clock: Clock) -> None:
    register(fhir, EC_PEM)
    with client(fhir, RSA_PEM, clock) as c, pytest.raises(FhirAuthError, match="401"):
        c.read("Patient", "x")
    assert fhir.token_requests()[0]["error"].startswith("no registered key")


def test_a_server_without_smart_is_refused_clearly(fhir: FhirTestServer, clock: Clock) -> None:
    with client(fhir, RSA_PEM, clock) as c, pytest.raises(Exception, match="404"):
        c.read("Patient", "x")


def test_weak_or_unsupported_keys_are_refused() -> None:
    weak = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    p256 = pem(ec.generate_private_key(ec.SECP256R1()))
    for key in (weak, p256):
        with pytest.raises(ValueError):
            load_private_key(key)


def test_an_alg_the_ehr_does_not_list_is_refused(fhir: FhirTestServer, clock: Clock) -> None:
    register(fhir, RSA_PEM)
    auth = SmartBackendAuth(fhir.base_url, CLIENT_ID, RSA_PEM, scope=SCOPE, clock=clock)
    auth.alg = "RS512"
    with pytest.raises(FhirUnsupported, match="RS512"):
        auth.token_url()
