"""Settings: defaults, and bad values reported by variable name."""

from __future__ import annotations

import pytest

from outreach.core.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.broker_url is None
    assert settings.rules_dir.name == "journeys"


@pytest.mark.parametrize(("field", "value", "variable"), [
    ("database_url", "mysql://x/y", "OUTREACH_DATABASE_URL"),
    ("broker_url", "amqp://guest@x//", "OUTREACH_BROKER_URL"),
    ("smtp_port", 70000, "OUTREACH_SMTP_PORT"),
    ("fhir_base_url", "not a url", "OUTREACH_FHIR_BASE_URL"),
    ("sweep_interval_seconds", 0, "OUTREACH_SWEEP_INTERVAL_SECONDS"),
    ("cap_per_day", 0, "OUTREACH_CAP_PER_DAY"),
    ("cap_per_week", 100, "OUTREACH_CAP_PER_WEEK"),
])
def test_bad_values_name_the_variable(field: str, value: object, variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(**{field: value})


def test_secrets_are_not_printed() -> None:
    settings = load_settings(webhook_secret="hunter2-hunter2-hunter2", smtp_password="pw-123456")
    assert "hunter2" not in repr(settings) and "pw-123456" not in repr(settings)
