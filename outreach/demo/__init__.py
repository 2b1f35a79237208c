"""`outreach demo`: replay fhir_fixtures/demo/ through the real pipeline on a simulated clock."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pydantic import AnyHttpUrl, SecretStr
from sqlalchemy import func, select

from connector.changes import version_of
from connector.resources import validate_resource
from outreach import FIXTURES, SHIPPED_JOURNEYS
from outreach.access import answers
from outreach.broker.enqueue import CollectingEnqueuer
from outreach.core.clock import SimulatedClock
from outreach.core.settings import Settings
from outreach.demo import staff, waitlist
from outreach.demo.console import KeyedConsole
from outreach.demo.ehr import DemoEhr
from outreach.demo.lines import PAD, details, not_triggered, stamp
from outreach.intake.ingest import IngestResult, ingest
from outreach.patients import preferences
from outreach.planning.outcomes import JourneyOutcome
from outreach.replies.inbound import handle_sms
from outreach.reports.render import as_table
from outreach.reports.service import outcome_report, period
from outreach.runtime import build_runtime
from outreach.sending.send import SendOutcome
from outreach.store.db import make_engine, make_session_factory
from outreach.store.migrate import upgrade
from outreach.store.models import Enrollment, ScheduledStep, SlotOffer, StepState
from outreach.store.preferences import load
from outreach.worker import jobs
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


DEMO_JOURNEYS = ("appointment-reminders.yaml", "library/satisfaction-survey.yaml",
                 "library/waitlist-backfill.yaml")
# Resource types whose first versions, arriving together, share one timeline line.
GROUPED = ("Patient", "Slot")


def demo_settings(settings: Settings, out_dir: Path) -> Settings:
    """The demo shows the preference and offer links, so it signs them with a throwaway secret
    when the environment sets none; with the shipped journeys it also runs the satisfaction
    survey and the waitlist backfill from the library, so a survey and its service recovery,
    and a cancelled time offered to the waitlist, show too."""
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


class Demo:
    def __init__(self, out_dir: Path, stream: TextIO, settings: Settings) -> None:
        settings = demo_settings(settings, out_dir)
        self.out, self.stream, self.settings = out_dir, stream, settings
        # What each message printed, by its key: the timeline shows it under its SENT line.
        self.printed: dict[str, str] = {}
        # First versions waiting to be shown on one line: (when, type, what they share), and
        # (id, the line for it alone) of each.
        self._group: tuple[datetime, str, str] | None = None
        self._grouped: list[tuple[str, str]] = []
        self._offers_shown: set[int] = set()
        self._staff_actions = 0
        engine = make_engine(f"sqlite:///{out_dir / 'outreach.db'}")
        upgrade(engine)
        sessions = make_session_factory(engine)
        self.enqueuer = CollectingEnqueuer()
        self.clock = SimulatedClock(datetime.fromisoformat("2000-01-01T00:00:00+00:00"))
        self.sink = DemoEhr(sessions, out_dir / "writeback", self.clock)
        self.rt = build_runtime(
            settings, sessions=sessions, clock=self.clock, ehr=self.sink, enqueue=self.enqueuer,
            channels={
                "email": KeyedConsole("email", "EMAILWRIT", self.printed),
                "sms": KeyedConsole("sms", "WRITTEN", self.printed),
            },
        )
        self.runner = InProcess(self.rt, self._sent)

    def say(self, moment: datetime, text: str) -> None:
        self._flush_group()
        self.stream.write(f"{stamp(moment, self.settings.zone)}  {text}\n")

    def _add_to_group(self, moment: datetime, resource: dict[str, Any], alone: str) -> None:
        """First versions that arrive together (the patients, a day's free Slots) share a line,
        which names their ids and what they have in common."""
        rtype, shared = resource["resourceType"], "v1 created"
        if rtype == "Slot":
            shared += f" (status {resource.get('status')})"
        if self._group != (moment, rtype, shared):
            self._flush_group()
            self._group = (moment, rtype, shared)
        self._grouped.append((resource["id"], alone))

    def _flush_group(self) -> None:
        if self._group is None:
            return
        (moment, rtype, shared), grouped = self._group, self._grouped
        self._group, self._grouped = None, []
        if len(grouped) == 1:
            self.say(moment, grouped[0][1])
        else:
            self.say(moment, f"{rtype}/{{{', '.join(rid for rid, _ in grouped)}}} {shared}")

    def _step_label(self, step_id: int) -> tuple[str, str]:
        with self.rt.sessions() as session:
            step = session.get_one(ScheduledStep, step_id)
            enrollment = step.enrollment
            return step.uid, f"{enrollment.journey}/{step.step_id} for {enrollment.patient} " \
                             f"({enrollment.anchor_reference})"

    def _sent(self, step_id: int, outcome: SendOutcome) -> None:
        uid, label = self._step_label(step_id)
        if outcome.state == StepState.SENT:
            self.say(self.clock.now(), f"SENT {outcome.channel}: {label}")
            self.stream.write(self.printed.pop(uid, ""))
        elif outcome.state != "not-queued":
            self.say(self.clock.now(), f"{outcome.state.upper()} {label}: {outcome.reason}")

    def drain(self) -> None:
        self.runner.drain()

    def run_until(self, moment: datetime) -> None:
        """Advance the clock, sending due steps; the sweep also offers freed times to the
        waitlist when a backfill is due (the in-process runner wakes for steps only)."""
        while (due := waitlist.next_due(self.rt)) is not None and due <= moment:
            self.runner.run_until(due)
            jobs.sweep(self.rt)
            self.drain()
            self._show_offers()
            if waitlist.next_due(self.rt) == due:
                break  # nothing moved it on: the next sweep, at the next step, tries again
        self.runner.run_until(moment)
        self._show_offers()

    def _show_offers(self) -> None:
        for offer in waitlist.offers_since(self.rt, self._offers_shown):
            self._offers_shown.add(offer.id)
            self.say(self.clock.now(), offer.line)
            self.stream.write(self.printed.pop(offer.key, ""))

    def _settle(self) -> None:
        """Run what the event queued, and what the sweep would do at once (a freed time)."""
        self.drain()
        self.run_until(self.clock.now())

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
        what += f" {change.kind.value}{details(resource)}"
        quiet = all(not_triggered(journey) for journey in result.journeys)
        if change.previous is None and quiet and change.resource_type in GROUPED:
            self._add_to_group(updated, resource, what)
            return
        self.say(updated, what)
        self._describe_all(result)
        self._settle()

    def reply(self, sms: dict[str, str]) -> None:
        """A patient's SMS reply, handled as the Twilio webhook route handles it."""
        received = datetime.fromisoformat(sms["received"].replace("Z", "+00:00"))
        self.run_until(received)
        offer = answers.open_offer(self.rt, sms["From"])
        result = handle_sms(self.rt, message_id=sms["MessageSid"], from_=sms["From"],
                            to=sms["To"], body=sms["Body"], provider="demo")
        self.say(received, f"REPLY by sms from {sms['From']}: “{sms['Body']}”")
        reading = f"{result.intent} ({result.rule})"
        if offer is not None and self._answered(offer.id):
            reading = f"answer to the {offer.kind} offer"
        self.stream.write(f"{PAD}↳ {reading}: {result.outcome}\n")
        if result.reply:
            self.stream.write(f"{PAD}↳ answered: “{result.reply}”\n")
        if result.changed is not None:  # the appointment as the reply changed it in the EHR
            self._describe_all(ingest(self.rt, result.changed, source="reply"))
        self._settle()

    def _answered(self, offer_id: int) -> bool:
        """Whether the reply settled the offer that was open for its number."""
        with self.rt.sessions() as session:
            return session.get_one(SlotOffer, offer_id).state != "open"

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
        quiet = f"{saved.quiet_from}–{saved.quiet_to}" if saved.quiet_from else "none"
        off = ", ".join(sorted(saved.categories_off)) or "none"
        self.stream.write(f"{PAD}↳ changed: {', '.join(changed)}; quiet hours {quiet}; "
                          f"opted out of: {off} (audited, written back)\n")
        self._settle()

    def staff(self, action: dict[str, Any]) -> None:
        """A clinician answers the patient and closes their Task from the SMART view."""
        received = _at(action)
        self.run_until(received)
        self._staff_actions += 1
        lines = staff.act(self.rt, action, received, self._staff_actions)
        self.say(received, f"STAFF {action['staff']} opens {action['patient']}'s outreach "
                           "view in the EHR (SMART)")
        self.stream.write(self.printed.pop(staff.message_key(self._staff_actions), ""))
        for line in lines:
            self.stream.write(f"{PAD}↳ {line}\n")
        self._settle()

    def _describe_all(self, result: IngestResult) -> None:
        """What each journey made of the change; not those it does not concern."""
        if result.outcome == "processed":
            for journey in result.journeys:
                if not not_triggered(journey):
                    self._describe(journey)

    def _describe(self, journey: JourneyOutcome) -> None:
        self.stream.write(f"{PAD}↳ {journey.journey}: {journey.action} ({journey.reason})\n")
        for step in journey.steps:
            when = "now" if step.state == StepState.QUEUED else stamp(step.due_at,
                                                                     self.settings.zone)
            note = f"  — {step.reason}" if step.reason else ""
            self.stream.write(f"{PAD}    {step.step_id:<14} {step.state:<10} {when}{note}\n")

    def outcomes(self, changes: list[dict[str, Any]]) -> None:
        """The manager's view of the same weeks: `outreach report` over the replayed period."""
        self._flush_group()
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


def run_demo(out_dir: Path, stream: TextIO, settings: Settings,
             fixtures: Path = DEMO_FIXTURES) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(out_dir, stream, settings)
    try:
        changes, replies = load_changes(fixtures), load_replies(fixtures)
        visits, actions = load_preferences(fixtures), staff.load_actions(fixtures)
        stream.write(f"Replaying {len(changes)} resource versions, {len(replies)} SMS replies, "
                     f"{len(visits)} preference page visits and {len(actions)} staff actions "
                     f"from {fixtures} (simulated clock, console channels, SQLite store)\n\n")
        handlers = (demo.replay, demo.reply, demo.preferences, demo.staff)
        events = [(_at(item), kind, item)
                  for kind, items in enumerate((changes, replies, visits, actions))
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
