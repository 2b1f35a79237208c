"""Fuzz the published OpenAPI schema: no input makes the API answer 500."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from outreach.api.app import create_app
from outreach.core.ports import Runtime
from tests.conftest import RuntimeFactory

TOKEN = "fuzz-token-0123456789"
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime(admin_tokens=f"fuzz={TOKEN}")


@schema.include(path_regex="^/admin").parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_api_never_answers_500(case: schemathesis.Case, rt: Runtime) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                           checks=[not_a_server_error])
