"""All configuration, from OUTREACH_* environment variables; a bad value stops the process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from outreach import SHIPPED_JOURNEYS

ENV_PREFIX = "OUTREACH_"


class SettingsError(Exception):
    """Raised with one line per bad variable, each naming the OUTREACH_ variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    fhir_base_url: AnyHttpUrl | None = None
    fhir_token: SecretStr | None = None
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
    timezone: str = "UTC"
    identifier_system: str = "urn:fhir-outreach:step"
    organization_name: str | None = None
    callback_phone: str | None = None
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    poll_interval_seconds: float = Field(default=60.0, gt=0)
    poll_overlap_seconds: int = Field(default=60, ge=0)
    max_send_attempts: int = Field(default=5, ge=1)
    visibility_timeout_seconds: int = Field(default=3600, ge=60)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
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

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def notify_endpoint(self) -> str | None:
        return self.public("/fhir/notify")

    @property
    def smtp_configured(self) -> bool:
        return bool(self.smtp_host and self.smtp_from)

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from)

    def public(self, path: str) -> str | None:
        """The URL at which Twilio (or the EHR) reaches `path` on this service."""
        return f"{str(self.public_url).rstrip('/')}{path}" if self.public_url else None


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise SettingsError naming each bad OUTREACH_ variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("\n".join(lines)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
