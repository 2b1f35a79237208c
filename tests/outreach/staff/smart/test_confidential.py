"""The SMART view as a confidential client of each kind (client_secret_basic, private_key_jwt),
against the local authorization server that requires it; SMART v1 discovery; the EHR's own
words when it refuses; and an access log that holds no launch id, code or state."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.auth import public_jwk
from outreach.core.settings import SettingsError, load_settings
from tests.conftest import RuntimeFactory
from tests.outreach.staff.smart.conftest import PATIENT_ID, assert_no_launch_secrets
from tests.support.smart_auth_server import (
    CLIENT_ID,
    CLIENT_SECRET,
    SmartAuthServer,
    ehr_sign_in,
)

LAUNCH = "launch-7f3a9c2e"


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def _secrets_of_the_run(auth: SmartAuthServer) -> list[str]:
    """The launch id, every state and every code the authorization server handed out."""
    states = [r["state"] for r in auth.state.authorize_requests]
    return [LAUNCH, *states, *auth.state.grants]


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A private key as an EHR registration would hold it: PEM here, its JWK at the EHR."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "smart-client.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, public_jwk(key, "RS384")


def _sign_in_and_open(client: httpx.Client, auth: SmartAuthServer) -> httpx.Response:
    auth.register_launch(LAUNCH, PATIENT_ID)
    callback = ehr_sign_in(client, auth, launch=LAUNCH)
    assert callback.status_code == 303, callback.text
    page = client.get("/smart/timeline")
    assert page.status_code == 200
    assert f"Patient/{PATIENT_ID}" in page.text
    return page


def test_a_client_secret_basic_registration_signs_in_and_logs_no_launch_secret(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer, access_log: list[str],
) -> None:
    auth.state.client_auth = "client_secret_basic"
    make_runtime(**smart_settings, smart_client_auth="client_secret_basic",
                 smart_client_secret=CLIENT_SECRET)
    _sign_in_and_open(client, auth)
    (request,), (headers,) = auth.state.token_requests, auth.state.token_headers
    scheme, _, encoded = headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"
    assert "client_id" not in request and "client_secret" not in request  # not in the body
    assert_no_launch_secrets(access_log, *_secrets_of_the_run(auth))
    assert not any(CLIENT_SECRET in line for line in access_log)


def test_a_private_key_jwt_registration_signs_in_with_a_fresh_assertion_and_logs_no_secret(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer, access_log: list[str], key_file: tuple[Path, dict[str, str]],
) -> None:
    path, jwk = key_file
    auth.state.client_auth = "private_key_jwt"
    auth.state.client_jwks = {"keys": [jwk]}
    make_runtime(**smart_settings, smart_client_auth="private_key_jwt",
                 smart_private_key_file=path)
    _sign_in_and_open(client, auth)
    (request,) = auth.state.token_requests
    claims = jwt.decode(request["client_assertion"], options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == f"{auth.base_url}/token"
    assert claims["exp"] - claims["iat"] <= 300
    assert jwt.get_unverified_header(request["client_assertion"])["alg"] == "RS384"
    assert "authorization" not in auth.state.token_headers[0]
    assert_no_launch_secrets(access_log, *_secrets_of_the_run(auth),
                             request["client_assertion"][:40])
    # What to register at the EHR: the public key, at a JWK Set URL.
    served = client.get("/smart/jwks").json()
    assert served == {"keys": [jwk]} and "d" not in served["keys"][0]


def test_a_wrong_secret_shows_and_logs_what_the_ehr_said(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer, caplog: pytest.LogCaptureFixture,
) -> None:
    auth.state.client_auth = "client_secret_basic"
    make_runtime(**smart_settings, smart_client_auth="client_secret_basic",
                 smart_client_secret="not-the-secret-the-ehr-issued")
    caplog.set_level(logging.INFO, logger="outreach.api.routes.smart")
    auth.register_launch(LAUNCH, PATIENT_ID)
    response = ehr_sign_in(client, auth, launch=LAUNCH)
    said = "invalid_client: client authentication failed: wrong client id or secret"
    assert response.status_code == 400
    assert f"The EHR refused the sign-in ({said})." in html.unescape(response.text)
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(said in line for line in logged), logged
    code = next(iter(auth.state.grants))
    assert not any(code in r.getMessage() for r in caplog.records)  # never the code
    assert client.get("/smart/timeline").status_code == 401


def test_a_public_client_at_an_ehr_that_wants_a_confidential_one_is_told_why(
    smart_rt: Any, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.client_auth = "private_key_jwt"
    response = ehr_sign_in(client, auth)
    assert response.status_code == 400
    assert "invalid_client: client authentication failed: a client_assertion is required" \
        in html.unescape(response.text)


def test_an_ehr_that_does_not_take_our_client_authentication_is_refused_before_sign_in(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer, key_file: tuple[Path, dict[str, str]],
) -> None:
    auth.state.client_auth = "client_secret_basic"  # and it advertises only that
    make_runtime(**smart_settings, smart_client_auth="private_key_jwt",
                 smart_private_key_file=key_file[0])
    response = client.get("/smart/launch", params={"iss": auth.fhir_base, "launch": "xyz"})
    assert response.status_code == 502 and "location" not in response.headers
    assert "does not accept this app's client authentication (private_key_jwt)" in \
        html.unescape(response.text)
    assert auth.state.authorize_requests == []


def test_access_denied_shows_the_ehrs_description(
    smart_rt: Any, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.deny = True
    auth.state.deny_description = "The user declined the outreach app"
    response = ehr_sign_in(client, auth)
    assert response.status_code == 400
    assert "(access_denied: The user declined the outreach app)" in html.unescape(response.text)


def test_a_smart_v1_ehr_is_found_through_its_capability_statement_and_asked_v1_scopes(
    smart_rt: Any, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.v1_only = True
    started = client.get("/smart/launch", params={"iss": auth.fhir_base, "launch": "xyz"})
    assert started.status_code == 302, started.text
    query = _query(started.headers["location"])
    assert started.headers["location"].startswith(f"{auth.base_url}/authorize?")
    assert query["scope"].split() == ["launch", "openid", "fhirUser", "patient/Patient.read",
                                      "patient/Appointment.read"]
    assert client.get(ehr_sign_in(client, auth).headers["location"]).status_code == 200


def test_an_ehr_publishing_no_smart_endpoints_is_a_permanent_error_not_try_again(
    make_runtime: RuntimeFactory, smart_settings: dict[str, Any], client: httpx.Client,
    auth: SmartAuthServer,
) -> None:
    make_runtime(**{**smart_settings, "smart_allowed_iss": f"{auth.base_url}/elsewhere"})
    response = client.get("/smart/launch", params={"iss": f"{auth.base_url}/elsewhere",
                                                   "launch": "xyz"})
    text = html.unescape(response.text)
    assert response.status_code == 502 and "publishes no SMART configuration" in text
    assert "Try again" not in text and "Tell IT" in text


def test_settings_refuse_a_confidential_client_without_its_credential(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="OUTREACH_SMART_CLIENT_SECRET is required"):
        load_settings(smart_client_auth="client_secret_basic")
    with pytest.raises(SettingsError, match="OUTREACH_SMART_PRIVATE_KEY_FILE must name"):
        load_settings(smart_client_auth="private_key_jwt")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(SettingsError, match="OUTREACH_SMART_PRIVATE_KEY_FILE: "):
        load_settings(smart_client_auth="private_key_jwt", smart_private_key_file=bad)
    with pytest.raises(SettingsError, match="is not client_secret_basic"):
        load_settings(smart_client_secret=CLIENT_SECRET)
    assert load_settings(smart_client_auth="client_secret_basic",
                         smart_client_secret=CLIENT_SECRET).smart_client_auth == \
        "client_secret_basic"


def test_an_ehr_whose_discovery_fails_is_a_try_again_page(
    smart_rt: Any, client: httpx.Client, auth: SmartAuthServer
) -> None:
    auth.state.discovery_failure = 503
    response = client.get("/smart/launch", params={"iss": auth.fhir_base, "launch": "xyz"})
    text = html.unescape(response.text)
    assert response.status_code == 502 and "location" not in response.headers
    assert "SMART configuration could not be read" in text and "Try again in a moment" in text
