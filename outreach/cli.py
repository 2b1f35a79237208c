"""The `outreach` command line."""

from __future__ import annotations

import logging
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from outreach.core import heap
from outreach.core.ports import EhrClient, Runtime
from outreach.core.settings import Settings, SettingsError, get_settings

app = typer.Typer(help="FHIR-native patient outreach.", no_args_is_help=True)
rules_app = typer.Typer(help="Journey files.", no_args_is_help=True)
subs_app = typer.Typer(help="The EHR's rest-hook Subscriptions.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(subs_app, name="subscriptions")
hl7_app = typer.Typer(help="HL7 v2 feeds over MLLP.", no_args_is_help=True)
app.add_typer(hl7_app, name="hl7")
ehr_app = typer.Typer(help="The EHR connection.", no_args_is_help=True)
app.add_typer(ehr_app, name="ehr")


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from exc


def _logging(level: int = logging.INFO) -> None:
    """Log to stderr, phone numbers and e-mail addresses masked in every line."""
    from outreach.core import redact

    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact.install()


def _require_schema(settings: Settings) -> None:
    from outreach.store.db import make_engine
    from outreach.store.migrate import SchemaOutOfDate, require_current

    try:
        require_current(make_engine(settings.database_url))
    except SchemaOutOfDate as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="Where to write the database and NDJSON")] = None,
) -> None:
    """Replay the bundled demo EHR through the real pipeline; no servers needed."""
    from outreach.demo import run_demo

    settings = _settings()
    _logging(logging.WARNING)
    out_dir = out or Path(tempfile.mkdtemp(prefix="outreach-demo-"))
    summary = run_demo(out_dir, sys.stdout, settings)
    typer.echo("\nSummary: " + ", ".join(f"{v} {k}" for k, v in sorted(summary.items())))
    folder = out_dir / "writeback"
    typer.echo("What would have been written back to the EHR (NDJSON, one file per type):")
    for file in sorted(folder.glob("*.ndjson")):
        typer.echo(f"  {file}")
    typer.echo(f"Database: {out_dir / 'outreach.db'}")


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic upgrade head)."""
    from outreach.store.db import make_engine
    from outreach.store.migrate import current_revision, upgrade

    settings = _settings()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    typer.echo(f"database at revision {current_revision(engine)}")


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the HTTP API: rest-hook receiver, health and metrics."""
    import uvicorn

    from outreach.api.app import create_app
    from outreach.api.server import uvicorn_config

    settings = _settings()
    if settings.webhook_secret is None:
        typer.echo("OUTREACH_WEBHOOK_SECRET is not set: the rest-hook endpoint would accept "
                   "nothing; set it (and run `outreach subscriptions ensure`)", err=True)
        raise typer.Exit(2)
    _require_schema(settings)
    _logging()
    _report_write_back()
    from outreach.core import redact

    config = uvicorn_config(create_app(), settings, host=host, port=port)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # configured by Config
        redact.install(logging.getLogger(name))
    heap.freeze_startup_heap()
    uvicorn.Server(config).run()


def _report_write_back() -> None:
    """Say at start what the EHR cannot take; those write-backs are kept locally instead. The
    runtime built for this is dropped again: worker pool processes fork from this one and must
    build their own connections."""
    from outreach import runtime
    from outreach.writeback.outbox import support_report

    rt = runtime.current()
    try:
        for reason in support_report(rt):
            logging.getLogger("outreach").warning("write-back: %s; kept locally instead", reason)
    finally:
        runtime.install(None)
        runtime.close(rt)


def _celery_argv(settings: Settings, *extra: str) -> None:
    if settings.broker_url is None:
        typer.echo("OUTREACH_BROKER_URL is not set: a worker needs a broker "
                   "(redis://...); without one, tasks run inside `outreach serve`", err=True)
        raise typer.Exit(2)
    _require_schema(settings)


@app.command()
def worker(
    beat: Annotated[bool, typer.Option(help="Also run the sweeper schedule (one node)")] = False,
    concurrency: int = 2,
    queues: Annotated[str | None, typer.Option(
        help="Comma-separated queues to consume: sends, writeback, celery (sweep, poll, "
             "campaigns). Default: all three")] = None,
) -> None:
    """Run a Celery worker (sending, write-back, polling)."""
    from outreach.broker.app import QUEUES, celery_app

    chosen = [q.strip() for q in (queues or ",".join(QUEUES)).split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if unknown or not chosen:
        typer.echo(f"--queues: {', '.join(unknown) or 'none given'}; the queues are "
                   f"{', '.join(QUEUES)}", err=True)
        raise typer.Exit(2)
    settings = _settings()
    _celery_argv(settings)
    _logging()
    _report_write_back()
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}",
            f"--queues={','.join(chosen)}"]
    if beat:
        argv.append("--beat")
    celery_app.worker_main(argv)


@app.command("beat")
def beat_command() -> None:
    """Run only the Celery beat scheduler (sweeps due steps, polls the EHR)."""
    from outreach.broker.app import celery_app

    settings = _settings()
    _celery_argv(settings)
    celery_app.start(["beat", "--loglevel=INFO"])


@rules_app.command("check")
def rules_check(paths: list[Path]) -> None:
    """Validate journey files or folders (each folder a set of its own) and the message
    templates: exit 0 when valid, 1 with file:line:col: message lines (SMS length, the STOP
    line, minimum-necessary fields)."""
    from channels.lint import lint_templates
    from channels.templates import SHIPPED, TemplateError
    from outreach.runtime import load_templates
    from rules import JourneyError, load_journeys
    from rules.loader import LoadedJourney

    settings = _settings()
    try:
        problems: list[str] = [str(p) for p in lint_templates(settings.templates_dir or SHIPPED)]
        names = load_templates(settings).names
    except TemplateError as exc:  # a template file that is not even YAML: file:line:col
        typer.echo(str(exc))
        raise typer.Exit(1) from exc
    loaded: list[LoadedJourney] = []
    found: list[str] = []
    for path in paths:
        try:
            loaded += load_journeys(path, names).journeys
        except JourneyError as exc:
            found += [str(p) for p in exc.problems]
    problems = found + problems
    if problems:
        typer.echo("\n".join(problems))
        files = len({p.split(":", 1)[0] for p in problems})
        typer.echo(f"{len(problems)} problem(s) in {files} file(s)", err=True)
        raise typer.Exit(1)
    for journey in loaded:
        typer.echo(f"ok  {journey.path}: {journey.name} ({len(journey.spec.steps)} steps, "
                   f"consent category {journey.spec.consent})")


@rules_app.command("schema")
def rules_schema() -> None:
    """Print the JSON Schema of a journey file (for editors; rules/journey.schema.json)."""
    import json

    from rules.schema import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@app.command()
def simulate(
    rules: Annotated[Path, typer.Option("--rules", help="A journey file or folder")],
    input_file: Annotated[Path, typer.Option("--input", help="A Bundle or NDJSON export")],
    now: Annotated[str | None, typer.Option(
        help="ISO instant to go live at (default: now)")] = None,
    until: Annotated[str | None, typer.Option(
        help="ISO instant to run the clock to (default: a week after the last change or visit)")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes to split the patients across (default: one per CPU, "
                    "each with at least 1,000 versions)")] = None,
) -> None:
    """A forecast for an export: every message the journeys would send (who, when, which step
    and channel) or why not, and the volumes per day, hour, channel and journey, deferrals,
    SMS segments and cost. Sends nothing; needs no database or EHR."""
    from datetime import UTC, datetime

    from outreach.simulate import InputError, as_json, as_table, read_resources
    from outreach.simulate import simulate as run_simulation
    from outreach.simulate_shards import default_workers
    from rules import JourneyError

    if output not in ("table", "json"):
        typer.echo("--format must be table or json", err=True)
        raise typer.Exit(2)
    moment = _instant_option("--now", now) if now else datetime.now(UTC)
    horizon = _instant_option("--until", until) if until else None
    if horizon is not None and horizon < moment:
        typer.echo(f"--until {until} is before --now", err=True)
        raise typer.Exit(2)
    _logging(logging.ERROR)
    try:
        resources = read_resources(input_file)
        forecast = run_simulation(rules, resources, moment, _settings(), horizon,
                                  workers or default_workers(len(resources)))
    except JourneyError as exc:
        typer.echo(str(exc))
        raise typer.Exit(1) from exc
    except (InputError, OSError) as exc:
        typer.echo(f"input: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(as_json(forecast) if output == "json" else as_table(forecast))
    for note in forecast.notes:
        typer.echo(note, err=True)


def _instant_option(option: str, value: str) -> datetime:
    from datetime import UTC

    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        typer.echo(f"{option}: not an ISO date-time: {value!r}", err=True)
        raise typer.Exit(2) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _date(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        typer.echo(f"{option}: not a date (YYYY-MM-DD): {value!r}", err=True)
        raise typer.Exit(2) from exc


def _filters(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value:
            typer.echo(f"--filter {pair!r}: use NAME=VALUE, e.g. journey=appointment-reminders",
                       err=True)
            raise typer.Exit(2)
        found[name.strip()] = value.strip()
    return found


@app.command()
def report(
    first: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), local time")],
    last: Annotated[str, typer.Option("--to", help="Last day, included")],
    output: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", help="NAME=VALUE: journey, step, channel, language, location, "
                         "practitioner, service_type (repeatable)")] = None,
    publish: Annotated[bool, typer.Option(
        help="Also write the figures to the EHR as a FHIR MeasureReport")] = False,
) -> None:
    """Outcomes of the appointments whose start falls in the period (docs/metrics.md): reached,
    confirmed, cancelled, fulfilled, no-show and their rates, by journey and more."""
    import json

    from outreach import runtime
    from outreach.reports.outcomes import UnknownFilter
    from outreach.reports.publish import publish as publish_report
    from outreach.reports.render import as_csv, as_table
    from outreach.reports.service import BadPeriod, outcome_report, period

    if output not in ("table", "json", "csv"):
        typer.echo("--format must be table, json or csv", err=True)
        raise typer.Exit(2)
    try:
        chosen = period(_date("--from", first), _date("--to", last))
    except BadPeriod as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    settings = _settings()
    if publish and settings.fhir_base_url is None:
        typer.echo("--publish needs OUTREACH_FHIR_BASE_URL", err=True)
        raise typer.Exit(2)
    if publish and filters:
        # The MeasureReport is identified by its period alone: filtered figures would replace
        # the whole period's report in the EHR.
        typer.echo("--publish writes the whole period's figures; run it without --filter",
                   err=True)
        raise typer.Exit(2)
    _require_schema(settings)
    _logging(logging.WARNING)
    rt = runtime.current()
    try:
        result = outcome_report(rt, chosen, _filters(filters or []))
    except UnknownFilter as exc:
        typer.echo(f"--filter: {exc}", err=True)
        raise typer.Exit(2) from exc
    rendered = {"json": lambda r: json.dumps(r, indent=2, ensure_ascii=False) + "\n",
                "csv": as_csv, "table": as_table}[output](result)
    typer.echo(rendered, nl=False)
    if publish:
        failed = False
        for done in publish_report(rt, chosen, result):
            where = f"{done.resource_type}/{done.server_id}" if done.server_id else \
                done.resource_type
            typer.echo(f"published {where}: {done.state}"
                       + (f" ({done.error})" if done.error else ""), err=True)
            failed |= done.state != "done"
        if failed:
            raise typer.Exit(1)


def _fhir_runtime() -> Runtime:
    from outreach import runtime

    settings = _settings()
    if settings.fhir_base_url is None:
        typer.echo("OUTREACH_FHIR_BASE_URL is not set", err=True)
        raise typer.Exit(2)
    return runtime.current()


def _client(rt: Runtime) -> EhrClient:
    assert rt.ehr is not None, "checked by _fhir_runtime"
    return rt.ehr


@ehr_app.command("check")
def ehr_check(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table")]
    = False,
) -> None:
    """Go-live check: per resource type the journeys need, how changes arrive, what can be
    written back, scheduling and SMART, each with its reason. Exit 0 when the enabled journeys
    can run, 1 with what is missing, 2 when the EHR cannot be reached."""
    import json

    from outreach.intake.golive import EhrUnreachable, as_table, check

    rt = _fhir_runtime()
    _logging(logging.ERROR)
    try:
        report_ = check(rt, str(rt.settings.fhir_base_url))
    except EhrUnreachable as exc:
        typer.echo(f"{exc}\n(OUTREACH_FHIR_BASE_URL={rt.settings.fhir_base_url})", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(report_.as_dict(), indent=2, ensure_ascii=False) if as_json
               else as_table(report_))
    if report_.missing:
        raise typer.Exit(1)


def _push_less(rt: Runtime) -> str | None:
    """Why this EHR takes no Subscriptions ("polling only: ..."), or None to go ahead."""
    from connector.capabilities import capabilities, push_route
    from connector.errors import FhirError

    try:
        caps = capabilities(_client(rt))
    except FhirError as exc:
        typer.echo(f"the EHR cannot be reached: {exc}", err=True)
        raise typer.Exit(2) from exc
    route, reason = push_route(caps)
    return reason if route is None and not caps.silent else None


def _offered_topics(rt: Runtime) -> dict[str, str]:
    """The configured topics (OUTREACH_SUBSCRIPTION_TOPICS) the EHR advertises; the others get
    rest-hook criteria, and are named."""
    from connector.capabilities import capabilities

    wanted = rt.settings.topics
    if not wanted:
        return {}
    advertised = capabilities(_client(rt)).topics
    for rtype, topic in wanted.items():
        if topic not in advertised:
            typer.echo(f"{rtype}: topic {topic} is not advertised by the EHR; rest-hook instead",
                       err=True)
    return {rtype: topic for rtype, topic in wanted.items() if topic in advertised}


def _polling_only(reason: str) -> None:
    typer.echo(f"polling only: {reason}; changes arrive by `outreach beat` polling "
               "(see `outreach ehr check`)")


def _subscriptions_failed(rt: Runtime, what: str, exc: Exception) -> None:
    """An EHR whose CapabilityStatement said nothing was tried: its refusal means polling only
    (exit 0). One that lists Subscription and still fails is a real problem (exit 1)."""
    from connector.capabilities import capabilities

    if capabilities(_client(rt)).silent:
        _polling_only(f"the CapabilityStatement lists no resources and {what} failed: {exc}")
        return
    typer.echo(f"{what} failed: {exc}", err=True)
    raise typer.Exit(1) from exc


@subs_app.command("ensure")
def subscriptions_ensure() -> None:
    """Create or repair the EHR's Subscriptions pointing at this service (topic-based where
    OUTREACH_SUBSCRIPTION_TOPICS names a topic the EHR advertises, rest-hook otherwise); on an
    EHR without Subscriptions, say so (polling only) and exit 0."""
    from connector import subscriptions
    from connector.errors import FhirError

    rt = _fhir_runtime()
    endpoint, secret = rt.settings.notify_endpoint, rt.settings.webhook_secret
    if endpoint is None or secret is None:
        typer.echo("set OUTREACH_PUBLIC_URL and OUTREACH_WEBHOOK_SECRET first", err=True)
        raise typer.Exit(2)
    if (reason := _push_less(rt)) is not None:
        _polling_only(reason)
        return
    try:
        states = subscriptions.ensure(_client(rt), rt.journeys.resource_types, endpoint,
                                      secret.get_secret_value(), _offered_topics(rt))
    except FhirError as exc:
        _subscriptions_failed(rt, "creating or repairing a Subscription", exc)
        return
    for state in states:
        typer.echo(f"{state.resource_type:<12} Subscription/{state.subscription_id} "
                   f"{state.kind:<11} {state.status:<10} {state.action}")


@subs_app.command("status")
def subscriptions_status() -> None:
    """Report the state of our Subscriptions in the EHR (exit 1 if any is missing or failing;
    0 with "polling only" on an EHR without Subscriptions)."""
    from connector import subscriptions
    from connector.errors import FhirError

    rt = _fhir_runtime()
    endpoint = rt.settings.notify_endpoint
    if endpoint is None:
        typer.echo("set OUTREACH_PUBLIC_URL first", err=True)
        raise typer.Exit(2)
    if (reason := _push_less(rt)) is not None:
        _polling_only(reason)
        return
    try:
        states = subscriptions.status(_client(rt), rt.journeys.resource_types, endpoint)
    except FhirError as exc:
        _subscriptions_failed(rt, "reading the Subscriptions", exc)
        return
    for state in states:
        error = f"  ({state.error})" if state.error else ""
        typer.echo(f"{state.resource_type:<12} Subscription/{state.subscription_id} "
                   f"{state.kind:<11} {state.status}{error}")
    if any(s.status != "active" for s in states):
        raise typer.Exit(1)


def _instant(value: str) -> datetime:
    from rules.changes import parse_instant

    try:
        return parse_instant(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO date or instant: {value!r}") from exc


@app.command()
def poll(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit")] = False,
    backfill: Annotated[tuple[str, str] | None, typer.Option(
        metavar="FROM TO", help="Ingest everything dated FROM..TO (ISO dates), e.g. at go-live",
    )] = None,
) -> None:
    """Ask the EHR for changes since the last poll (or in a date range) and process them."""
    from outreach.intake import polling

    rt = _fhir_runtime()
    _require_schema(rt.settings)
    _logging()
    heap.freeze_startup_heap()
    if backfill is not None:
        counts = polling.backfill(rt, _instant(backfill[0]), _instant(backfill[1]))
    elif once:
        for rtype, strategy in polling.plan(rt).items():
            typer.echo(f"{rtype}: " + (f"cannot poll: {strategy}" if isinstance(strategy, Exception)
                                       else f"polling by {strategy.value}"))
        counts = polling.poll_once(rt)
    else:
        typer.echo("continuous polling runs in `outreach beat`; use --once or --backfill here",
                   err=True)
        raise typer.Exit(2)
    for rtype, count in counts.items():
        typer.echo(f"{rtype}: {count} new versions processed")


@hl7_app.command("listen")
def hl7_listen(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MLLP port (2575 is HL7's)")] = 2575,
) -> None:
    """Take SIU (S12-S15, S17, S26) and ADT (A03, A04) messages over MLLP; ACK each once stored."""
    import asyncio
    import contextlib

    from outreach import runtime
    from outreach.intake.hl7_listener import serve as serve_hl7

    settings = _settings()
    _require_schema(settings)
    _logging()
    rt = runtime.current()
    heap.freeze_startup_heap()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how an operator stops it
        asyncio.run(serve_hl7(rt, host, port))


def main() -> None:
    app()
