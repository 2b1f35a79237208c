"""All configuration, from OUTREACH_* environment variables; a bad value stops the process."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connector.auth import load_private_key
from outreach import SHIPPED_JOURNEYS
from outreach.core.links import sign
from rules.caps import CapPolicy

ENV_PREFIX = "OUTREACH_"
SEND_BATCH_SIZE = 25  # due steps per send task (OUTREACH_SEND_BATCH_SIZE)
WRITEBACK_BATCH_SIZE = 25  # outbox rows per write-back task (OUTREACH_WRITEBACK_BATCH_SIZE)
NOTIFY_THREADS = 128  # rest-hook notifications ingested at once (OUTREACH_NOTIFY_THREADS)


class SettingsError(Exception):
    """Raised with one line per bad variable, each naming the OUTREACH_ variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    fhir_base_url: AnyHttpUrl | None = None
    fhir_token: SecretStr | None = None
    # SMART Backend Services: a private key (PEM file, RSA → RS384, EC P-384 → ES384) and the
    # client id registered with the EHR; the token URL comes from .well-known unless set.
    fhir_private_key_file: Path | None = None
    fhir_client_id: str | None = Field(default=None, validate_default=True)
    fhir_key_id: str | None = None
    fhir_token_url: AnyHttpUrl | None = None
    # What we read (the journeys' resources, Consents) and write back (docs/consent.md and the
    # README's write-back table).
    fhir_scope: str = (
        "system/Appointment.rsu system/Encounter.rs system/Patient.rs system/RelatedPerson.rs "
        "system/Consent.crs system/Communication.crus system/CommunicationRequest.crus "
        "system/Task.crus system/QuestionnaireResponse.crus"
    )
    fhir_timeout_seconds: float = Field(default=10.0, gt=0)
    fhir_retry_attempts: int = Field(default=4, ge=1, le=10)
    verify_notifications: bool = True
    database_url: str = "sqlite:///var/outreach.db"
    broker_url: str | None = None
    rules_dir: Path = SHIPPED_JOURNEYS
    templates_dir: Path | None = None
    public_url: AnyHttpUrl | None = None
    webhook_secret: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str | None = None
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_base_url: AnyHttpUrl = AnyHttpUrl("https://api.twilio.com")
    sms_rate_per_second: float = Field(default=1.0, gt=0)
    gateway_url: AnyHttpUrl | None = None
    gateway_secret: SecretStr | None = None
    gateway_channels: str = "sms"
    send_lease_seconds: int = Field(default=300, ge=1)
    requeue_after_seconds: int = Field(default=600, ge=1)
    low_score_threshold: int = Field(default=6, ge=0, le=10)
    # Request bodies, refused with 413 while they stream in, before anything parses them: a
    # FHIR notification (a resource or a Bundle), and everything else (Twilio, admin, pages).
    max_notification_bytes: int = Field(default=5_000_000, ge=10_000, le=100_000_000)
    max_request_bytes: int = Field(default=65_536, ge=4_096, le=10_000_000)
    # Slow or stuck requests (slowloris): the request line and headers must arrive within
    # `header_timeout_seconds` and the whole body within `body_timeout_seconds` (else 408), and
    # the request is cut off after `request_timeout_seconds` (503 if no response has started);
    # an idle keep-alive connection is closed after `keep_alive_seconds`.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    request_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    # Host names this service answers to ("outreach.hospital.org,localhost"); unset, any.
    allowed_hosts: str | None = None
    # Backport IG topic-based Subscriptions instead of rest-hook criteria, per resource type:
    # "Appointment=https://ehr.example/topics/appointment-change,Encounter=…"; used only where
    # the EHR's CapabilityStatement advertises the topic.
    subscription_topics: str | None = None
    # The outcome report's cost estimate: what one SMS segment costs (set your contract's).
    sms_price_per_segment: float = Field(default=0.0083, ge=0, le=10)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    # The TCPA healthcare exemption's limits, per patient: texts a day and a week (booking
    # confirmations and other cap-exempt steps aside), on these channels.
    cap_per_day: int = Field(default=1, ge=1, le=10)
    cap_per_week: int = Field(default=3, ge=1, le=50)
    cap_channels: str = "sms"
    # Numbers written without a country code in the EHR ("555-555-0123") are dialled with this
    # one ("1"); unset, only numbers written with + or 00 can be texted.
    default_country_code: str | None = Field(default=None, pattern=r"^[1-9]\d{0,2}$")
    # The patient preference page: links in messages are signed with this secret and expire.
    # Unset, messages carry no link and the page is off.
    preferences_secret: SecretStr | None = None
    preferences_link_days: int = Field(default=30, ge=1, le=365)
    # Read the patient's Consents from the EHR with the Patient (one request, _revinclude).
    read_ehr_consent: bool = True
    # The send-time re-check trusts the version we ingested this recently instead of asking the
    # EHR again (0: always ask). Only safe where changes are pushed (rest-hook), not polled.
    recheck_fresh_seconds: float = Field(default=0.0, ge=0, le=300)
    # Admin API callers: "name=token,name2=token2"; the name is what the audit log records.
    admin_tokens: SecretStr | None = None
    timezone: str = "UTC"
    identifier_system: str = "urn:fhir-outreach:step"
    organization_name: str | None = None
    callback_phone: str | None = None
    # SMART on FHIR clinician view (EHR and standalone launch). The EHR's base URLs allowed
    # to launch us ("iss", comma-separated) default to OUTREACH_FHIR_BASE_URL; the session
    # secret encrypts the session cookie and has no default, so a deployment must choose one.
    smart_client_id: str | None = None
    # Unset: the least the view needs, in the syntax the EHR advertises (SMART v2 `.rs`, or v1
    # `.read`); set, exactly these (the flow adds `launch` or `launch/patient`).
    smart_scopes: str | None = None
    smart_allowed_iss: str | None = None
    smart_session_secret: SecretStr | None = Field(default=None, validate_default=True)
    # How the app authenticates at the EHR's token endpoint: a public client (PKCE only), or a
    # confidential one with a client secret (HTTP Basic) or a signed assertion (private_key_jwt,
    # RSA → RS384 or EC P-384 → ES384, the Backend Services key format).
    smart_client_auth: Literal["none", "client_secret_basic", "private_key_jwt"] = "none"
    smart_client_secret: SecretStr | None = None
    smart_private_key_file: Path | None = None
    smart_key_id: str | None = None
    # Origins allowed to frame the view (the EHR's web UI), comma-separated; unset, the origins
    # of the allowed issuers.
    smart_frame_ancestors: str | None = None
    # When the browser sends no cookie in the EHR's frame (third-party cookies blocked), carry
    # the launch in `state` and the session in a short-lived page token instead.
    smart_cookieless: bool = True
    # Staff sign-in to the managers' dashboard by the SMART standalone launch (same client):
    # the scopes asked (who the user is, nothing of the chart), and the fhirUser types let in.
    smart_staff_scopes: str = "openid fhirUser"
    dashboard_staff_types: str = "Practitioner,PractitionerRole,Person"
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    poll_interval_seconds: float = Field(default=60.0, gt=0)
    poll_overlap_seconds: int = Field(default=60, ge=0)
    # EHRs without _lastUpdated: each pass sweeps resources dated in [now - past, now + future].
    poll_window_past_days: int = Field(default=1, ge=0)
    poll_window_future_days: int = Field(default=120, ge=1)
    poll_window_slice_days: int = Field(default=7, ge=1)
    # A topic subscription silent (no event, no heartbeat) longer than this is treated as a gap.
    topic_silence_seconds: int = Field(default=900, ge=10)
    max_send_attempts: int = Field(default=5, ge=1)
    # Write-back ids handed to one task, written in one transaction Bundle where the EHR takes
    # them (with each sent message's CommunicationRequest: up to twice as many entries).
    writeback_batch_size: int = Field(default=WRITEBACK_BATCH_SIZE, ge=1, le=500)
    # Entries in one transaction Bundle, for EHRs that cap a transaction's size (a batch
    # larger than that goes in several Bundles; a sent message's pair stays in one).
    writeback_bundle_entries: int = Field(default=50, ge=2, le=1000)
    # Due steps per send task: the chunk is re-checked with one EHR search per resource type
    # (`_id=a,b,c`), each step then sent and recorded on its own. A day's reminders fired at
    # once cost the EHR (the throttled, paid resource) one search per chunk, not one per step.
    send_batch_size: int = Field(default=SEND_BATCH_SIZE, ge=1, le=100)
    # Patients of one chunk sent to at once (threads in the task): each provider call and its
    # records wait on the network, not the CPU. One patient's steps stay in order on one thread,
    # so their caps and quiet hours are checked as one after another.
    send_threads: int = Field(default=4, ge=1, le=16)
    # Rest-hook notifications ingested at once by `outreach serve` (threads that mostly wait
    # for their group commit: more of them, bigger batches, less CPU per notification).
    notify_threads: int = Field(default=NOTIFY_THREADS, ge=1, le=1000)
    visibility_timeout_seconds: int = Field(default=3600, ge=60)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("fhir_private_key_file")
    @classmethod
    def _readable_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if info.data.get("fhir_token") is not None:
            raise ValueError("set either OUTREACH_FHIR_TOKEN or a SMART private key, not both")
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("fhir_client_id")
    @classmethod
    def _smart_pair(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (info.data.get("fhir_private_key_file") is None) != (value is None):
            raise ValueError("SMART Backend Services needs both OUTREACH_FHIR_CLIENT_ID and "
                             "OUTREACH_FHIR_PRIVATE_KEY_FILE")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from exc
        if backend not in ("sqlite", "postgresql"):
            raise ValueError("use a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _redis_broker(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://")):
            raise ValueError("use a redis:// URL, or leave unset to run tasks in-process")
        return value or None

    @field_validator("smart_allowed_iss")
    @classmethod
    def _issuer_urls(cls, value: str | None) -> str | None:
        for issuer in _split(value):
            parsed = urlsplit(issuer)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query:
                raise ValueError(f"{issuer!r} is not an http(s) FHIR base URL")
        return value

    @field_validator("smart_staff_scopes")
    @classmethod
    def _identity_scopes(cls, value: str) -> str:
        scopes = value.split()
        if "openid" not in scopes or "fhirUser" not in scopes:
            raise ValueError("must include openid and fhirUser: the sign-in needs to know who "
                             "the user is")
        if any(s.startswith("launch") for s in scopes):
            raise ValueError("a staff sign-in takes no launch scope (no patient is opened)")
        return value

    @field_validator("dashboard_staff_types")
    @classmethod
    def _staff_types(cls, value: str) -> str:
        staff = {"Practitioner", "PractitionerRole", "Person"}
        chosen = set(_split(value))
        if not chosen or not chosen <= staff:
            raise ValueError(f"a comma-separated choice among {', '.join(sorted(staff))} "
                             "(patients and related persons never see the dashboard)")
        return value

    @field_validator("preferences_secret")
    @classmethod
    def _preferences_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("use at least 32 random characters, e.g. `openssl rand -hex 32`")
        return value

    @field_validator("webhook_secret", "twilio_auth_token", "gateway_secret")
    @classmethod
    def _shared_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty or short secret would let anyone sign: refuse it at start, not at the door.
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError("at least 16 characters (an empty or short secret is refused); "
                             "leave the variable unset to turn the feature off")
        return value

    @field_validator("smtp_password")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("empty: leave it unset for a server without login")
        return value

    @field_validator("smart_session_secret")
    @classmethod
    def _session_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            if info.data.get("smart_client_id"):
                raise ValueError("required when OUTREACH_SMART_CLIENT_ID is set: "
                                 "at least 32 random characters, e.g. `openssl rand -hex 32`")
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError("use at least 32 random characters")
        return value

    @field_validator("smart_frame_ancestors")
    @classmethod
    def _origins(cls, value: str | None) -> str | None:
        for origin in _split(value):
            parsed = urlsplit(origin)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or \
                    parsed.path not in ("", "/") or parsed.query or ";" in origin or \
                    " " in origin:
                raise ValueError(f"{origin[:80]!r} is not an origin (https://ehr.example)")
        return value

    @model_validator(mode="after")
    def _client_credentials(self) -> Settings:
        """A confidential client needs its credential, and only that one; a bad key stops the
        start, not the first clinician's launch."""
        auth, secret, key = (self.smart_client_auth, self.smart_client_secret,
                             self.smart_private_key_file)
        if auth == "client_secret_basic" and (secret is None or
                                              len(secret.get_secret_value()) < 8):
            raise ValueError("OUTREACH_SMART_CLIENT_SECRET is required (the secret the EHR "
                             "issued) with OUTREACH_SMART_CLIENT_AUTH=client_secret_basic")
        if auth == "private_key_jwt":
            if key is None or not key.is_file():
                raise ValueError("OUTREACH_SMART_PRIVATE_KEY_FILE must name a PEM file with "
                                 "OUTREACH_SMART_CLIENT_AUTH=private_key_jwt")
            _check_key(key)
        if auth != "client_secret_basic" and secret is not None:
            raise ValueError("OUTREACH_SMART_CLIENT_SECRET is set but OUTREACH_SMART_CLIENT_AUTH "
                             "is not client_secret_basic")
        return self

    @property
    def smart_ancestors(self) -> list[str]:
        """Origins that may frame the SMART view: the configured ones, else the issuers'."""
        configured = _split(self.smart_frame_ancestors) or self.smart_issuers
        origins = []
        for url in configured:
            parsed = urlsplit(url)
            host = f"[{parsed.hostname}]" if ":" in (parsed.hostname or "") else parsed.hostname
            origin = f"{parsed.scheme}://{host}" + (f":{parsed.port}" if parsed.port else "")
            if origin not in origins:
                origins.append(origin)
        return origins

    @property
    def smart_issuers(self) -> list[str]:
        """EHR FHIR bases allowed to launch the SMART view, without trailing slashes."""
        configured = _split(self.smart_allowed_iss)
        if not configured and self.fhir_base_url is not None:
            configured = [str(self.fhir_base_url)]
        return [issuer.rstrip("/") for issuer in configured]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def trusted_hosts(self) -> list[str]:
        return _split(self.allowed_hosts)

    @property
    def topics(self) -> dict[str, str]:
        """`subscription_topics` as resource type → topic canonical."""
        return dict(item.split("=", 1) for item in _split(self.subscription_topics))

    @field_validator("subscription_topics")
    @classmethod
    def _topic_pairs(cls, value: str | None) -> str | None:
        for item in _split(value):
            rtype, _, url = item.partition("=")
            if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", rtype) or not re.fullmatch(
                    r"https?://[^\s,=]{1,500}", url):
                raise ValueError(f"{item[:80]!r}: use Type=https://topic-canonical, "
                                 "comma-separated")
        return value

    @property
    def cap_policy(self) -> CapPolicy:
        return CapPolicy(self.cap_per_day, self.cap_per_week, frozenset(_split(self.cap_channels)))

    def preferences_link(self, patient: str, language: str | None, now: datetime) -> str | None:
        """The signed, expiring link to the patient's preference page, when the page is on."""
        if self.preferences_secret is None or self.public_url is None:
            return None
        token = sign(self.preferences_secret.get_secret_value().encode(), patient,
                     language or "en", now, timedelta(days=self.preferences_link_days))
        return self.public(f"/p/{token}")

    def offer_link(self, uid: str, language: str, now: datetime, until: datetime) -> str | None:
        """The signed link to the page of times offered to a patient, valid while they are held
        (the same secret as the preference page, signed for another purpose)."""
        if self.preferences_secret is None or self.public_url is None:
            return None
        token = sign(self.preferences_secret.get_secret_value().encode(), uid, language, now,
                     max(until - now, timedelta(minutes=1)), purpose="offers")
        return self.public(f"/o/{token}")

    @property
    def notify_endpoint(self) -> str | None:
        return self.public("/fhir/notify")

    @property
    def smtp_configured(self) -> bool:
        return bool(self.smtp_host and self.smtp_from)

    @field_validator("admin_tokens")
    @classmethod
    def _named_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for pair in value.get_secret_value().split(","):
            name, _, token = pair.strip().partition("=")
            if not name or len(token) < 16:
                raise ValueError("use name=token pairs separated by commas, tokens of at least "
                                 "16 characters")
        return value

    def admin_callers(self) -> dict[str, str]:
        """token → caller name."""
        if self.admin_tokens is None:
            return {}
        pairs = (p.strip().partition("=") for p in self.admin_tokens.get_secret_value().split(","))
        return {token: name for name, _, token in pairs}

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from)

    def public(self, path: str) -> str | None:
        """The URL at which Twilio (or the EHR) reaches `path` on this service."""
        return f"{str(self.public_url).rstrip('/')}{path}" if self.public_url else None


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _check_key(path: Path) -> None:
    try:
        load_private_key(path.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"OUTREACH_SMART_PRIVATE_KEY_FILE: {exc}") from exc


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise SettingsError naming each bad OUTREACH_ variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a check across variables names them itself
                lines.append(message)
                continue
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{name}: {message}")
        raise SettingsError("\n".join(lines)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
