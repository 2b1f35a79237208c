"""`outreach demo`: replay fhir_fixtures/demo/ through the real pipeline on a simulated clock."""

from __future__ import annotations

import io
import json
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pydantic import AnyHttpUrl, SecretStr
from sqlalchemy import func, select

from channels import ConsoleChannel
from connector.changes import version_of
from connector.resources import validate_resource
from outreach import FIXTURES, SHIPPED_JOURNEYS
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.settings import Settings
from outreach.demo.ehr import DemoEhr
from outreach.intake.ingest import ingest
from outreach.patients import preferences
from outreach.replies.inbound import handle_sms
from outreach.reports.render import as_table
from outreach.reports.service import outcome_report, period
from outreach.runtime import build_runtime
from outreach.sending.send import SendOutcome
from outreach.store.db import make_engine, make_session_factory
from outreach.store.migrate import upgrade
from outreach.store.models import Enrollment, ScheduledStep, StepState
from outreach.store.preferences import load
from outreach.worker.inprocess import InProcess

DEMO_FIXTURES = FIXTURES / "demo"


def load_changes(folder: Path) -> list[dict[str, Any]]:
    """Every resource version in the folder, validated, in the order the EHR made them."""
    resources = []
    for file in sorted(folder.glob("*.json")):
        resources.append(validate_resource(json.loads(file.read_text(encoding="utf-8"))))
    return sorted(resources, key=lambda r: version_of(r)[1] or datetime.min)


def load_replies(folder: Path) -> list[dict[str, str]]:
    """The patients' SMS replies (Twilio's webhook fields and when each arrived), if any."""
    file = folder / "replies" / "sms.json"
    if not file.exists():
        return []
    return [{k: str(v) for k, v in r.items()} for r in json.loads(file.read_text("utf-8"))]


def load_preferences(folder: Path) -> list[dict[str, Any]]:
    """Patients who open the preference link from a message and save a choice, if any."""
    file = folder / "preferences" / "page.json"
    if not file.exists():
        return []
    return list(json.loads(file.read_text("utf-8")))


DEMO_JOURNEYS = ("appointment-reminders.yaml", "library/satisfaction-survey.yaml")


def demo_settings(settings: Settings, out_dir: Path) -> Settings:
    """The demo shows the preference links, so it signs them with a throwaway secret when the
    environment sets none; with the shipped journeys it also runs the satisfaction survey from
    the library, so a survey and its service recovery show too."""
    update: dict[str, Any] = {}
    if settings.preferences_secret is None:
        update["preferences_secret"] = SecretStr(secrets.token_hex(32))
    if settings.public_url is None:
        update["public_url"] = AnyHttpUrl("http://localhost:8000")
    if settings.rules_dir == SHIPPED_JOURNEYS:
        rules = out_dir / "rules"
        rules.mkdir(exist_ok=True)
        for name in DEMO_JOURNEYS:
            shutil.copyfile(SHIPPED_JOURNEYS / name, rules / Path(name).name)
        update["rules_dir"] = rules
    return settings.model_copy(update=update) if update else settings


def _at(item: dict[str, Any]) -> datetime:
    if "received" in item:
        return datetime.fromisoformat(str(item["received"]).replace("Z", "+00:00"))
    _, updated = version_of(item)
    return updated or datetime.min.replace(tzinfo=UTC)


def _stamp(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.zone).strftime("%a %Y-%m-%d %H:%M %Z")


class Demo:
    def __init__(self, out_dir: Path, stream: TextIO, settings: Settings) -> None:
        settings = demo_settings(settings, out_dir)
        self.out, self.stream, self.settings = out_dir, stream, settings
        # Console channels write here; the timeline prints each message under its SENT line.
        self.outbox = io.StringIO()
        engine = make_engine(f"sqlite:///{out_dir / 'outreach.db'}")
        upgrade(engine)
        sessions = make_session_factory(engine)
        self.enqueuer = CollectingEnqueuer()
        self.clock = SimulatedClock(datetime.fromisoformat("2000-01-01T00:00:00+00:00"))
        self.sink = DemoEhr(sessions, out_dir / "writeback")
        self.rt = build_runtime(
            settings, sessions=sessions, clock=self.clock, ehr=self.sink, enqueue=self.enqueuer,
            channels={
                "email": ConsoleChannel(self.outbox, name="email", medium="EMAILWRIT"),
                "sms": ConsoleChannel(self.outbox, name="sms", medium="WRITTEN"),
            },
        )
        self.runner = InProcess(self.rt, self._sent)

    def say(self, moment: datetime, text: str) -> None:
        self.stream.write(f"{_stamp(moment, self.settings)}  {text}\n")

    def _step_label(self, step_id: int) -> str:
        with self.rt.sessions() as session:
            step = session.get_one(ScheduledStep, step_id)
            enrollment = step.enrollment
            return f"{enrollment.journey}/{step.step_id} for {enrollment.patient} " \
                   f"({enrollment.anchor_reference})"

    def _sent(self, step_id: int, outcome: SendOutcome) -> None:
        label = self._step_label(step_id)
        if outcome.state == StepState.SENT:
            self.say(self.clock.now(), f"SENT {outcome.channel}: {label}")
            self.stream.write(self.outbox.getvalue())
        elif outcome.state != "not-queued":
            self.say(self.clock.now(), f"{outcome.state.upper()} {label}: {outcome.reason}")
        self.outbox.seek(0)
        self.outbox.truncate()

    def drain(self) -> None:
        self.runner.drain()

    def run_until(self, moment: datetime) -> None:
        self.runner.run_until(moment)

    def replay(self, resource: dict[str, Any]) -> None:
        _, updated = version_of(resource)
        assert updated is not None, "demo fixtures carry meta.lastUpdated"
        self.run_until(updated)
        result = ingest(self.rt, resource, source="demo")
        change = result.change
        what = f"{change.reference} v{change.version_id}"
        if result.outcome != "processed":
            self.say(updated, f"{what} delivered again: {result.outcome}, ignored")
            return
        what += f" {change.kind.value}"
        if resource["resourceType"] == "Appointment":
            what += f" (status {resource['status']}, start {_stamp_plain(resource['start'])})"
        self.say(updated, what)
        for journey in result.journeys:
            self._describe(journey.journey, journey.action, journey.reason, journey.steps)
        self.drain()

    def reply(self, sms: dict[str, str]) -> None:
        """A patient's SMS reply, handled as the Twilio webhook route handles it."""
        received = datetime.fromisoformat(sms["received"].replace("Z", "+00:00"))
        self.run_until(received)
        result = handle_sms(self.rt, message_id=sms["MessageSid"], from_=sms["From"],
                            to=sms["To"], body=sms["Body"], provider="demo")
        if result.changed is not None:
            ingest(self.rt, result.changed, source="reply")
        pad = " " * 24
        self.say(received, f"REPLY by sms from {sms['From']}: “{sms['Body']}”")
        self.stream.write(f"{pad}↳ {result.intent} ({result.rule}): {result.outcome}\n")
        if result.reply:
            self.stream.write(f"{pad}↳ answered: “{result.reply}”\n")
        self.drain()

    def preferences(self, visit: dict[str, Any]) -> None:
        """A patient opens the link from a message and saves the form, as the page does."""
        received = _at(visit)
        self.run_until(received)
        link = self.settings.preferences_link(visit["patient"], visit["link_language"], received)
        assert link is not None, "demo_settings turns the page on"
        claims = preferences.open_link(self.rt, link.rsplit("/", 1)[1])
        changed = preferences.update(self.rt, claims, preferences.from_form(visit["form"]))
        self.say(received, f"PREFERENCES saved by {claims.patient} from the link in a message")
        with self.rt.sessions() as session:
            saved = load(session, claims.patient)
        pad = " " * 24
        quiet = f"{saved.quiet_from}–{saved.quiet_to}" if saved.quiet_from else "none"
        off = ", ".join(sorted(saved.categories_off)) or "none"
        self.stream.write(f"{pad}↳ changed: {', '.join(changed)}; quiet hours {quiet}; "
                          f"opted out of: {off} (audited, written back)\n")
        self.drain()

    def _describe(self, journey: str, action: str, reason: str,
                  steps: list[ScheduledStep]) -> None:
        pad = " " * 24
        self.stream.write(f"{pad}↳ {journey}: {action} ({reason})\n")
        for step in steps:
            when = "now" if step.state == StepState.QUEUED else _stamp(step.due_at, self.settings)
            note = f"  — {step.reason}" if step.reason else ""
            self.stream.write(f"{pad}    {step.step_id:<14} {step.state:<10} {when}{note}\n")

    def outcomes(self, changes: list[dict[str, Any]]) -> None:
        """The manager's view of the same weeks: `outreach report` over the replayed period."""
        days = [_at(r).astimezone(self.settings.zone).date() for r in changes]
        days += [s.astimezone(self.settings.zone).date() for s in _starts(changes)]
        result = outcome_report(self.rt, period(min(days), max(days)))
        self.stream.write("\n" + as_table(result))

    def summary(self) -> dict[str, int]:
        with self.rt.sessions() as session:
            counts = dict(session.execute(
                select(ScheduledStep.state, func.count()).group_by(ScheduledStep.state)).all())
            counts["enrollments"] = session.scalar(select(func.count(Enrollment.id))) or 0
        for rtype, written in self.sink.written().items():
            counts[f"{rtype} written back"] = written
        return {str(k): int(v) for k, v in counts.items()}


def _stamp_plain(value: str) -> str:
    return value.replace("T", " ").replace(":00Z", " UTC")


def run_demo(out_dir: Path, stream: TextIO, settings: Settings,
             fixtures: Path = DEMO_FIXTURES) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(out_dir, stream, settings)
    try:
        changes, replies = load_changes(fixtures), load_replies(fixtures)
        visits = load_preferences(fixtures)
        stream.write(f"Replaying {len(changes)} resource versions, {len(replies)} SMS replies and "
                     f"{len(visits)} preference page visits from {fixtures} (simulated clock, "
                     "console channels, SQLite store)\n\n")
        handlers = (demo.replay, demo.reply, demo.preferences)
        events = [(_at(item), kind, item) for kind, items in enumerate((changes, replies, visits))
                  for item in items]
        for _, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
            handlers[kind](item)
        last = max(_horizon(changes))
        demo.run_until(last)
        demo.outcomes(changes)
        return demo.summary()
    finally:
        demo.rt.engine.dispose()


def _starts(changes: list[dict[str, Any]]) -> Iterator[datetime]:
    for resource in changes:
        if resource["resourceType"] == "Appointment" and resource.get("start"):
            yield datetime.fromisoformat(resource["start"].replace("Z", "+00:00"))


def _horizon(changes: list[dict[str, Any]]) -> Iterator[datetime]:
    for resource in changes:
        _, updated = version_of(resource)
        if updated:
            yield updated
    for start in _starts(changes):
        yield start + timedelta(hours=1)
