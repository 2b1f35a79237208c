"""What each worker task does, as plain functions of a Runtime: the orchestration between stages.
A stage returns what it found (a newer version of a resource) and the job hands it upstream to
intake; no stage calls back. The Celery tasks, the demo and the tests all run these."""

from __future__ import annotations

import logging

from connector.errors import FhirUnavailable
from outreach.access import waitlist
from outreach.core.ports import Runtime
from outreach.intake import campaigns, polling, topics
from outreach.intake.campaigns import CampaignResult
from outreach.intake.ingest import ingest
from outreach.sending import sweep as sweeper
from outreach.sending.send import SendOutcome
from outreach.sending.send import send_step as send
from outreach.sending.send import send_steps as send_chunk
from outreach.sending.sweep import SweepResult
from outreach.writeback import delivery_status, outbox

log = logging.getLogger(__name__)


def send_step(rt: Runtime, step_id: int) -> SendOutcome:
    """Send one step; a newer version of its resource found at the send-time check is ingested,
    so the whole enrollment follows it (cancelled, re-planned)."""
    outcome = send(rt, step_id)
    if outcome.fresh is not None:
        ingest(rt, outcome.fresh, source="send-check")
    return outcome


def send_steps(rt: Runtime, step_ids: list[int]) -> list[SendOutcome]:
    """Send a chunk of steps, re-checked with one EHR search (outreach.sending.send.send_steps);
    then each newer version found is ingested, as for one step. An ingest that fails is logged
    and leaves the others: its step has already moved on, and polling brings the version in."""
    outcomes = send_chunk(rt, step_ids)
    for outcome in outcomes:
        if outcome.fresh is None:
            continue
        try:
            ingest(rt, outcome.fresh, source="send-check")
        except Exception as exc:
            log.exception("step %s: the newer version found was not ingested (%s)",
                          outcome.step_id, type(exc).__name__)
    return outcomes


def write_back(rt: Runtime, writeback_id: int) -> str:
    return outbox.write_back(rt, writeback_id)


def write_back_many(rt: Runtime, writeback_ids: list[int]) -> dict[int, str]:
    return outbox.write_back_many(rt, writeback_ids)


def sweep(rt: Runtime) -> SweepResult:
    """Due steps queued; then the waitlist: expired offers closed, the next patients asked."""
    result = sweeper.sweep(rt)
    delivery_status.purge_early(rt)
    asked = waitlist.advance(rt)
    if any(asked.values()):
        log.info("waitlist: %(asked)d patients asked, %(closed)d backfills closed", asked)
    return result


def poll(rt: Runtime) -> dict[str, int]:
    """One reconcile pass; a topic subscription gone quiet is recovered first."""
    if rt.ehr is None:
        return {}
    try:
        topics.check_silence(rt)
        return polling.poll_once(rt)
    except FhirUnavailable as exc:
        # The client already backed off and retried; the cursor holds what was ingested, so the
        # next scheduled pass resumes from there.
        log.warning("poll stopped, the EHR is unavailable (%s); resuming next pass", exc)
        return {}


def run_campaigns(rt: Runtime) -> list[CampaignResult]:
    return campaigns.run_due_campaigns(rt)
