"""How the app proves itself at the EHR's token endpoint: as a public client (its id, PKCE
alone), or as a confidential one by HTTP Basic with the client secret (`client_secret_basic`) or
by a signed assertion (`private_key_jwt`, the Backend Services signing code)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from urllib.parse import quote_plus

from connector.auth import ASSERTION_TYPE, client_assertion, load_private_key, public_jwk
from outreach.core.settings import Settings
from outreach.staff.smart.launch import LaunchError, SmartEndpoints


@dataclass(frozen=True)
class ClientAuth:
    client_id: str
    method: str = "none"  # "none" | "client_secret_basic" | "private_key_jwt"
    secret: str | None = None
    private_key_pem: bytes | None = None
    key_id: str | None = None

    @classmethod
    def public(cls, client_id: str) -> ClientAuth:
        return cls(client_id)

    def credentials(self, token_endpoint: str, now: float | None = None
                    ) -> tuple[dict[str, str], dict[str, str]]:
        """(form fields, headers) to add to a token request to `token_endpoint`."""
        if self.method == "client_secret_basic":
            assert self.secret is not None, "checked by the settings"
            # RFC 6749 §2.3.1: each part form-encoded before Base64.
            pair = f"{quote_plus(self.client_id, safe='')}:{quote_plus(self.secret, safe='')}"
            return {}, {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}
        if self.method == "private_key_jwt":
            assert self.private_key_pem is not None, "checked by the settings"
            key, alg = load_private_key(self.private_key_pem)
            assertion = client_assertion(key, alg, self.client_id, token_endpoint,
                                         self.key_id or public_jwk(key, alg)["kid"],
                                         time.time() if now is None else now)
            return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}, {}
        return {"client_id": self.client_id}, {}

    def check(self, endpoints: SmartEndpoints) -> None:
        """Refuse, before the clinician signs in, an EHR that says it will not take our method."""
        methods = endpoints.auth_methods
        if self.method != "none" and methods is not None and self.method not in methods:
            raise LaunchError(f"The EHR does not accept this app's client authentication "
                              f"({self.method}); it lists {', '.join(methods[:5]) or 'none'}.",
                              502, hint="Tell IT: set OUTREACH_SMART_CLIENT_AUTH to a method "
                                        "the EHR registration uses (docs/smart.md).")


def client_auth(settings: Settings) -> ClientAuth:
    """The app's client authentication, from the settings (which checked it at start)."""
    assert settings.smart_client_id is not None, "checked by the route"
    secret = settings.smart_client_secret
    key_file = settings.smart_private_key_file
    return ClientAuth(
        settings.smart_client_id, settings.smart_client_auth,
        secret.get_secret_value() if secret is not None else None,
        key_file.read_bytes() if settings.smart_client_auth == "private_key_jwt" and key_file
        else None,
        settings.smart_key_id)


def public_keys(settings: Settings) -> dict[str, list[dict[str, str]]] | None:
    """The JWK Set an EHR registration can point at (private_key_jwt only)."""
    key_file = settings.smart_private_key_file
    if settings.smart_client_auth != "private_key_jwt" or key_file is None:
        return None
    key, alg = load_private_key(key_file.read_bytes())
    jwk = public_jwk(key, alg)
    if settings.smart_key_id:
        jwk["kid"] = settings.smart_key_id
    return {"keys": [jwk]}
