"""The one builder of a Runtime, from settings: used by serve, worker, demo, simulate, the
benchmarks and the tests (each overriding only what it replaces: clock, EHR, channels, enqueuer)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from channels import Channel, ConsoleChannel, SmtpEmailChannel, TemplateCatalog
from channels.templates import SHIPPED as SHIPPED_TEMPLATES
from channels.twilio import TwilioSmsChannel
from channels.webhook import WebhookChannel
from connector.auth import SmartBackendAuth
from connector.client import FhirClient, RetryPolicy
from outreach.broker.app import celery_app
from outreach.broker.enqueue import CeleryEnqueuer
from outreach.core.clock import Clock, SystemClock
from outreach.core.journeys import ReloadingJourneySet
from outreach.core.ports import EhrClient, Enqueuer, Runtime
from outreach.core.settings import Settings, get_settings
from outreach.sending.ratelimit import LocalRateLimiter, RedisRateLimiter
from outreach.store.db import make_engine, make_session_factory
from rules import JourneySet

log = logging.getLogger(__name__)

TWILIO_STATUS_PATH = "/channels/twilio/status"
TWILIO_INBOUND_PATH = "/channels/twilio/inbound"


def _sms_throttle(settings: Settings) -> Callable[[str], None]:
    if settings.broker_url:
        return RedisRateLimiter(settings.broker_url, settings.sms_rate_per_second)
    return LocalRateLimiter(settings.sms_rate_per_second)


def build_channels(settings: Settings) -> dict[str, Channel]:
    """Console always; email when SMTP is set; SMS through Twilio when it is set; channels
    listed in OUTREACH_GATEWAY_CHANNELS through the hospital's own gateway when that is set."""
    channels: dict[str, Channel] = {"console": ConsoleChannel(sys.stderr)}
    if settings.smtp_configured:
        assert settings.smtp_host and settings.smtp_from
        channels["email"] = SmtpEmailChannel(
            settings.smtp_host, settings.smtp_port, settings.smtp_from,
            starttls=settings.smtp_starttls, username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        )
    if settings.twilio_configured:
        assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        channels["sms"] = TwilioSmsChannel(
            settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
            settings.twilio_from, base_url=str(settings.twilio_base_url),
            status_callback=settings.public(TWILIO_STATUS_PATH),
            throttle=_sms_throttle(settings),
        )
    if settings.gateway_url is not None and settings.gateway_secret is not None:
        for name in filter(None, (n.strip() for n in settings.gateway_channels.split(","))):
            channels[name] = WebhookChannel(
                str(settings.gateway_url), settings.gateway_secret.get_secret_value(), name=name,
                medium="EMAILWRIT" if name == "email" else "WRITTEN",
            )
    return channels


def load_templates(settings: Settings) -> TemplateCatalog:
    return TemplateCatalog(settings.templates_dir or SHIPPED_TEMPLATES)


def build_fhir_client(settings: Settings) -> FhirClient:
    """The one EHR client: SMART Backend Services, a static bearer token, or no auth."""
    base = str(settings.fhir_base_url)
    token = settings.fhir_token.get_secret_value() if settings.fhir_token else None
    auth = None
    if settings.fhir_private_key_file is not None and settings.fhir_client_id is not None:
        auth = SmartBackendAuth(
            base, settings.fhir_client_id, settings.fhir_private_key_file.read_bytes(),
            scope=settings.fhir_scope, key_id=settings.fhir_key_id,
            token_url=str(settings.fhir_token_url) if settings.fhir_token_url else None,
        )
    return FhirClient(base, token=token, auth=auth, timeout=settings.fhir_timeout_seconds,
                      retry=RetryPolicy(attempts=settings.fhir_retry_attempts))


def build_runtime(
    settings: Settings, *, enqueue: Enqueuer | None = None, clock: Clock | None = None,
    ehr: EhrClient | Literal["settings"] | None = "settings",
    channels: Mapping[str, Channel] | None = None, journeys: JourneySet | None = None,
    sessions: sessionmaker[Session] | None = None,
) -> Runtime:
    """Production wiring unless told otherwise: the configured database, the EHR at
    OUTREACH_FHIR_BASE_URL (None without one), the configured channels, hot-reloaded journeys,
    the wall clock and Celery (by task name) for background work."""
    templates = load_templates(settings)
    if ehr == "settings":
        ehr = build_fhir_client(settings) if settings.fhir_base_url is not None else None
    return Runtime(
        settings=settings,
        sessions=sessions or make_session_factory(make_engine(settings.database_url)),
        clock=clock or SystemClock(),
        journeys=journeys or ReloadingJourneySet(settings.rules_dir, templates.names),
        templates=templates,
        channels=build_channels(settings) if channels is None else channels,
        ehr=ehr,
        enqueue=enqueue or CeleryEnqueuer(celery_app, settings.send_batch_size,
                                          settings.writeback_batch_size),
    )


def close(rt: Runtime) -> None:
    """Release what the builder opened: the EHR client's connections and the database pool."""
    if isinstance(rt.ehr, FhirClient):
        rt.ehr.close()
    rt.engine.dispose()


_current: Runtime | None = None
_lock = threading.Lock()


def current() -> Runtime:
    """The process-wide runtime, built from settings on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = build_runtime(get_settings())
        return _current


def install(runtime: Runtime | None) -> None:
    """Use this runtime in this process (the demo and the tests wire their own)."""
    global _current
    with _lock:
        _current = runtime
