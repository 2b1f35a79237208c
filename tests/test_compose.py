"""docker-compose.yml, Dockerfile and .env.example: what a user of the compose stack relies on.

Docker cannot run here, so these tests read the files. When a Compose v2 CLI is available
(`docker compose` or a standalone v2 `docker-compose`), `config -q` also validates the file;
it needs no Docker engine. Without one, only that check is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
HAPI_INIT_SQL = ROOT / "deploy" / "postgres" / "10-create-hapi-database.sql"
DOCS = ROOT / "docs" / "compose.md"

OUR_SERVICES = ("migrate", "api", "worker", "beat", "subscriptions")
LONG_RUNNING = ("api", "worker", "beat")
ONE_SHOTS = ("migrate", "hapi-ready", "subscriptions")
BACKING_SERVICES = ("hapi", "postgres", "redis", "mailpit")

# The settings every fhir-outreach container gets (OUTREACH_WEBHOOK_SECRET is checked apart).
EXPECTED_ENV = {
    "OUTREACH_FHIR_BASE_URL": "http://hapi:8080/fhir",
    "OUTREACH_DATABASE_URL": "postgresql+psycopg://outreach:outreach@postgres:5432/outreach",
    "OUTREACH_BROKER_URL": "redis://redis:6379/0",
    "OUTREACH_PUBLIC_URL": "http://api:8000",
    "OUTREACH_SMTP_HOST": "mailpit",
    "OUTREACH_SMTP_PORT": "1025",
    "OUTREACH_SMTP_FROM": "reminders@example.org",
    "OUTREACH_TIMEZONE": "${OUTREACH_TIMEZONE:-UTC}",
}
REQUIRED_SECRET = re.compile(r"^\$\{OUTREACH_WEBHOOK_SECRET:\?[^}]+\}$")

# depends_on entries allowed to wait only for "started", with the reason. The HAPI image is
# distroless (no shell, curl or wget) so it has no healthcheck; hapi-ready polls it instead
# and everything else waits for hapi-ready to complete.
STARTED_ONLY = {("hapi-ready", "hapi"): "hapi-ready itself polls HAPI's /fhir/metadata"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form for environment"
    return {str(key): str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    # The short (list) form means condition: service_started for every entry.
    assert isinstance(deps, dict), "use the long form of depends_on, with a condition"
    return deps


def test_every_service_is_defined(services: dict[str, dict[str, Any]]) -> None:
    expected = {*OUR_SERVICES, *BACKING_SERVICES, "hapi-ready"}
    assert expected <= set(services)


def test_api_worker_beat_share_one_image_and_differ_by_command(
    services: dict[str, dict[str, Any]],
) -> None:
    ours = [services[name] for name in (*OUR_SERVICES, "hapi-ready")]
    builds = {yaml.safe_dump(s["build"], sort_keys=True) for s in ours}
    images = {s["image"] for s in ours}
    assert len(builds) == 1 and len(images) == 1, "one build, one image for all our services"
    build = ours[0]["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()

    commands = {name: services[name]["command"] for name in OUR_SERVICES}
    assert commands == {
        "migrate": ["migrate"],
        "api": ["serve", "--host", "0.0.0.0", "--port", "8000"],
        "worker": ["worker"],
        "beat": ["beat"],
        "subscriptions": ["subscriptions", "ensure"],
    }
    for name in OUR_SERVICES:
        assert "entrypoint" not in services[name], f"{name} must run the image's `outreach`"


def test_env_anchor_carries_every_setting(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    anchor = {str(k): str(v) for k, v in compose["x-outreach-env"].items()}
    for key, value in EXPECTED_ENV.items():
        assert anchor.get(key) == value, key
    assert REQUIRED_SECRET.match(anchor["OUTREACH_WEBHOOK_SECRET"])
    for name in OUR_SERVICES:
        assert _env(services[name]) == anchor, f"{name} must use the shared x-outreach-env"


def test_settings_point_at_the_services_that_serve_them(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _env(services["api"])
    fhir = urlsplit(env["OUTREACH_FHIR_BASE_URL"])
    assert (fhir.hostname, fhir.port, fhir.path) == ("hapi", 8080, "/fhir")

    database = urlsplit(env["OUTREACH_DATABASE_URL"])
    postgres = _env(services["postgres"])
    assert database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]

    assert urlsplit(env["OUTREACH_BROKER_URL"]).hostname == "redis"
    assert env["OUTREACH_SMTP_HOST"] == "mailpit"

    public = urlsplit(env["OUTREACH_PUBLIC_URL"])
    serve = services["api"]["command"]
    assert public.hostname == "api"
    assert str(public.port) == serve[serve.index("--port") + 1]


def test_no_secret_is_hard_coded(services: dict[str, dict[str, Any]]) -> None:
    for name in OUR_SERVICES:
        secret = _env(services[name])["OUTREACH_WEBHOOK_SECRET"]
        assert REQUIRED_SECRET.match(secret), f"{name}: the secret must come from the environment"
    # Any other secret-looking setting of ours must also come from the environment.
    for name, service in services.items():
        for key, value in _env(service).items():
            if key.startswith("OUTREACH_") and re.search(r"SECRET|TOKEN|PASSWORD|SID", key):
                assert value.startswith("${") and ":-" not in value, f"{name}.{key}"


def test_env_example_documents_what_compose_reads() -> None:
    lines = [line.strip() for line in ENV_EXAMPLE.read_text().splitlines()]
    assignments = dict(
        line.lstrip("# ").split("=", 1) for line in lines if re.match(r"^#? ?[A-Z_]+=", line)
    )
    # Shipped empty: `docker compose up` stops with a clear message until it is set.
    assert assignments.get("OUTREACH_WEBHOOK_SECRET") == ""
    uncommented = "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", uncommented))
    assert referenced <= set(assignments), referenced - set(assignments)


def test_dependencies_wait_for_health_or_completion(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, spec in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec.get("condition")
            dependency = services[target]
            if condition == "service_healthy":
                test = (dependency.get("healthcheck") or {}).get("test")
                assert test and test != ["NONE"], f"{target} has no healthcheck ({name} waits)"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOTS and dependency.get("restart") == "no", target
            else:
                assert condition == "service_started", f"{name} -> {target}: {condition}"
                assert (name, target) in STARTED_ONLY, f"{name} -> {target} waits for nothing"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    def conditions(name: str) -> dict[str, str]:
        return {t: s["condition"] for t, s in _depends_on(services[name]).items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    for name in LONG_RUNNING:
        assert conditions(name)["migrate"] == "service_completed_successfully"
        assert conditions(name)["redis"] == "service_healthy"
    assert conditions("subscriptions") == {
        "hapi-ready": "service_completed_successfully",
        "api": "service_healthy",
    }
    assert conditions("hapi") == {"postgres": "service_healthy"}


def test_restart_policies(services: dict[str, dict[str, Any]]) -> None:
    for name in ONE_SHOTS:
        assert services[name].get("restart") == "no", f"{name} is a one-shot job"
    for name in (*LONG_RUNNING, *BACKING_SERVICES):
        assert services[name].get("restart") == "unless-stopped", name


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert api_check.startswith("CMD python -c")
    assert "urllib.request" in api_check and "http://localhost:8000/healthz" in api_check

    worker_check = services["worker"]["healthcheck"]["test"]
    assert worker_check[0] == "CMD-SHELL"
    # `-A` is a global option and goes before the sub-command; `$$` is compose's escape for
    # `$`, so the container's shell expands HOSTNAME.
    assert worker_check[1].startswith(
        "celery -A outreach.broker.app:celery_app inspect ping -d celery@$$HOSTNAME"
    )

    postgres_check = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in postgres_check and "-h 127.0.0.1" in postgres_check
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["mailpit"]["healthcheck"]["test"] == ["CMD", "/mailpit", "readyz"]


def test_hapi_is_r4_with_rest_hook_subscriptions_on_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    hapi = services["hapi"]
    image, _, tag = hapi["image"].partition(":")
    assert image == "hapiproject/hapi"
    assert tag and "latest" not in tag, "pin the HAPI image"

    env = _env(hapi)
    assert env["hapi.fhir.fhir_version"] == "R4"
    assert env["hapi.fhir.subscription.resthook_enabled"] == "true"
    assert "hapi.fhir.subscription.resthook.enabled" not in env  # not a HAPI property
    assert env["spring.datasource.driverClassName"] == "org.postgresql.Driver"
    assert env["spring.jpa.properties.hibernate.dialect"] == (
        "ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect"
    )

    # HAPI's database lives in the postgres service and is created by the init script.
    jdbc = urlsplit(env["spring.datasource.url"].removeprefix("jdbc:"))
    assert (jdbc.scheme, jdbc.hostname, jdbc.port) == ("postgresql", "postgres", 5432)
    database = jdbc.path.lstrip("/")
    assert database != _env(services["postgres"])["POSTGRES_DB"], "HAPI gets its own database"
    sql = HAPI_INIT_SQL.read_text()
    user, password = env["spring.datasource.username"], env["spring.datasource.password"]
    assert re.search(rf"CREATE ROLE {user} LOGIN PASSWORD '{re.escape(password)}';", sql)
    assert re.search(rf"CREATE DATABASE {database} OWNER {user};", sql)
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    def container_ports(name: str) -> set[str]:
        return {str(p).rsplit(":", 1)[-1] for p in services[name].get("ports", [])}

    assert container_ports("api") == {"8000"}
    assert container_ports("hapi") == {"8080"}
    assert container_ports("mailpit") == {"8025"}  # the web UI; SMTP stays inside
    for name in ("postgres", "redis", "worker", "beat"):
        assert not services[name].get("ports"), f"{name} should not be published"


def test_dockerfile_builds_one_cached_non_root_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    assert re.search(r"^RUN pip install [^\n]*\buv\b", text, re.M)

    def position(pattern: str) -> int:
        match = re.search(pattern, text, re.M)
        assert match, pattern
        return match.start()

    lock = position(r"^COPY pyproject\.toml uv\.lock ")
    deps = position(r"uv sync --frozen --no-dev --no-install-project")
    source = position(r"^COPY \. \.")
    project = position(r"uv sync --frozen --no-dev\s*$")
    assert lock < deps < source < project, "dependencies must be installed before the source"

    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert re.search(r'^ENV PATH="/app/\.venv/bin:', text, re.M)
    assert re.search(r'^ENTRYPOINT \["outreach"\]\s*$', text, re.M)
    assert re.search(r'^CMD \["serve", "--host", "0\.0\.0\.0", "--port", "8000"\]\s*$', text, re.M)

    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".git"} <= ignored


def test_docs_cover_every_service(services: dict[str, dict[str, Any]]) -> None:
    text = DOCS.read_text()
    for name in services:
        assert f"`{name}`" in text, f"docs/compose.md does not mention {name}"
    assert "http://localhost:8025" in text


def _compose_cli() -> list[str] | None:
    """A Compose v2 command line, if one is installed (no Docker engine is needed)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=30)
        if re.search(r"\bv?2\.\d+", probe.stdout):
            return [standalone]
    return None


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI (`docker compose` or docker-compose v2) on PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "HAPI_"))}
    empty_env_file = tmp_path / "empty.env"  # so a developer's own .env cannot interfere
    empty_env_file.write_text("")
    command = [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), "config", "-q"]

    ok = subprocess.run(
        command,
        env={**env, "OUTREACH_WEBHOOK_SECRET": "dummy-secret-for-config"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert ok.returncode == 0 and "error" not in ok.stderr.lower(), ok.stderr

    missing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "set OUTREACH_WEBHOOK_SECRET in .env" in missing.stderr, missing.stderr
