"""The go-live check: what this EHR lets the enabled journeys do, each with its reason (the
CapabilityStatement's word or a read-only probe), for `outreach ehr check`.

Probes only read (searches with `_count=1`, the SMART configuration): the check never writes to
the EHR, so it is safe to run against production."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from connector.capabilities import (
    Capabilities,
    PollStrategy,
    parse_capabilities,
    poll_candidates,
    push_route,
)
from connector.errors import FhirAuthError, FhirError, FhirUnavailable
from connector.scheduling_ihe import ihe_advertised
from outreach.core.ports import EhrClient, Runtime
from outreach.intake.campaigns import expand_search
from outreach.writeback.outbox import WRITTEN_TYPES

POLL_LABEL = {PollStrategy.LAST_UPDATED: "polling by _lastUpdated",
              PollStrategy.DATE_WINDOW: "polling by date window"}


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"         # works with less (kept locally, no push, an optional feature)
    UNKNOWN = "unknown"   # the EHR says nothing; will be tried
    FAIL = "FAIL"         # an enabled journey cannot run


@dataclass(frozen=True, slots=True)
class Finding:
    area: str       # changes | campaign | write-back | scheduling | smart
    subject: str    # a resource type or feature
    result: str     # e.g. "polling by _lastUpdated", "rest-hook", "kept locally"
    status: Status
    reason: str


class EhrUnreachable(Exception):
    """The EHR could not be asked at all (down, refused our credentials, not FHIR)."""


@dataclass(frozen=True, slots=True)
class Report:
    base_url: str
    fhir_version: str | None
    findings: list[Finding]

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.status is Status.FAIL]

    def as_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "fhir_version": self.fhir_version,
                "ready": not self.missing, "findings": [asdict(f) for f in self.findings]}


def _probe(ehr: EhrClient, rtype: str, params: dict[str, Any]) -> str:
    """One read-only search; the answer as `→ 200` or `→ 400 (why)`. The EHR being down or
    refusing our credentials is not an answer about the search: it propagates."""
    shown = "&".join(f"{k}={v}" for k, vs in params.items()
                     for v in (vs if isinstance(vs, list) else [vs]))
    try:
        next(iter(ehr.search(rtype, {**params, "_count": 1})), None)
    except (FhirUnavailable, FhirAuthError):
        raise
    except FhirError as exc:
        return f"probe: GET {rtype}?{shown} → {exc.status or 'error'} ({str(exc)[:120]})"
    return f"probe: GET {rtype}?{shown} → 200"


def _poll_params(strategy: PollStrategy, now: datetime) -> dict[str, Any]:
    stamp = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if strategy is PollStrategy.LAST_UPDATED:
        return {"_lastUpdated": f"gt{stamp}"}
    day = now.date()
    return {"date": [f"ge{day.isoformat()}", f"lt{(day + timedelta(days=1)).isoformat()}"]}


def _poll_finding(ehr: EhrClient, caps: Capabilities, rtype: str, now: datetime) -> Finding:
    tried: list[str] = []  # statement's word, then the probe's answer, for each strategy
    for strategy, why in poll_candidates(caps, rtype):
        answer = _probe(ehr, rtype, _poll_params(strategy, now))
        tried += [why] if why not in tried else []
        tried.append(answer)
        if answer.endswith("→ 200"):
            return Finding("changes", rtype, POLL_LABEL[strategy], Status.OK, "; ".join(tried))
    reason = "; ".join(tried) or (
        f"CapabilityStatement: no search-type on {rtype} by _lastUpdated or date")
    return Finding("changes", rtype, "no polling", Status.FAIL, reason)


def _push_finding(ehr: EhrClient, caps: Capabilities, rtype: str) -> Finding:
    route, why = push_route(caps)
    if route is None and not caps.silent:
        return Finding("changes", rtype, "no push", Status.WARN, why)
    answer = _probe(ehr, "Subscription", {"status": "active"})
    if not answer.endswith("→ 200"):
        return Finding("changes", rtype, "no push", Status.WARN, f"{why}; {answer}")
    return Finding("changes", rtype, route or "rest-hook", Status.OK, f"{why}; {answer}")


def _changes(ehr: EhrClient, caps: Capabilities, rtype: str, now: datetime) -> list[Finding]:
    """Push and polling for one type; the type fails only when neither can bring changes."""
    push, poll = _push_finding(ehr, caps, rtype), _poll_finding(ehr, caps, rtype, now)
    if poll.status is Status.FAIL and push.status is Status.OK:
        # Push alone works, but nothing recovers a lost notification.
        poll = replace(poll, status=Status.WARN)
    elif poll.status is Status.FAIL:
        push = replace(push, status=Status.FAIL)
    return [push, poll]


def _campaign(ehr: EhrClient, caps: Capabilities, name: str, search: str,
              now: datetime) -> Finding:
    """A scheduled journey's search, run once (`{today-1y}` expanded) with `_count=1`, as the
    campaign would run it."""
    rtype, params = expand_search(search, now.date())
    if not caps.supports(rtype, "search-type"):
        return Finding("campaign", f"{name}: {rtype}", "cannot search", Status.FAIL,
                       f"CapabilityStatement: no search-type on {rtype}")
    answer = _probe(ehr, rtype, dict(params))
    ok = answer.endswith("→ 200")
    return Finding("campaign", f"{name}: {rtype}", "search" if ok else "search refused",
                   Status.OK if ok else Status.FAIL, answer)


def _interactions_reason(caps: Capabilities, rtype: str, wanted: tuple[str, ...]) -> Finding:
    if caps.silent:
        return Finding("write-back", rtype, "unknown: will be tried", Status.UNKNOWN,
                       "CapabilityStatement lists no resources (unknown)")
    missing = [i for i in wanted if not caps.supports(rtype, i)]
    if missing:
        return Finding("write-back", rtype, "kept locally", Status.WARN,
                       f"CapabilityStatement: no {', '.join(missing)} on {rtype}")
    return Finding("write-back", rtype, "written to the EHR", Status.OK,
                   f"CapabilityStatement: {rtype} lists {', '.join(wanted)}")


def _write_back(caps: Capabilities) -> list[Finding]:
    return [_interactions_reason(caps, rtype,
                                 ("create",) if how == "create" else
                                 ("create", "update", "search-type"))
            for rtype, how in WRITTEN_TYPES.items()]


def _scheduling(caps: Capabilities) -> list[Finding]:
    """Rescheduling and waitlist offers: plain FHIR (Slot/Schedule search, Appointment update)
    or the IHE operations; neither is needed by the journeys themselves."""
    needs = (("Slot", "search-type"), ("Schedule", "search-type"), ("Appointment", "update"))
    missing = [f"{i} on {t}" for t, i in needs if not caps.supports(t, i)]
    plain = Finding("scheduling", "Slot/Schedule search, Appointment update",
                    "no" if missing else "yes", Status.WARN if missing else Status.OK,
                    f"CapabilityStatement: no {', '.join(missing)}" if missing else
                    "CapabilityStatement: Slot and Schedule search-type, Appointment update")
    ihe = ihe_advertised(caps)
    return [plain, Finding("scheduling", "IHE $find/$book", "yes" if ihe else "no",
                           Status.OK if ihe else Status.WARN,
                           "CapabilityStatement: Appointment lists $find and $book" if ihe else
                           "CapabilityStatement: Appointment lists no $find/$book")]


def _smart(ehr: EhrClient) -> Finding:
    try:
        config = ehr.get(".well-known/smart-configuration")
    except (FhirUnavailable, FhirAuthError):
        raise
    except FhirError as exc:
        return Finding("smart", "SMART launch", "no", Status.WARN,
                       f"probe: GET .well-known/smart-configuration → {exc.status or 'error'}")
    has = "authorization_endpoint" in config
    return Finding("smart", "SMART launch", "yes" if has else "no",
                   Status.OK if has else Status.WARN,
                   "probe: GET .well-known/smart-configuration → 200"
                   + ("" if has else ", without authorization_endpoint (backend services only)"))


def check(rt: Runtime, base_url: str) -> Report:
    """Ask the EHR as the service would; EhrUnreachable when it cannot be asked at all."""
    assert rt.ehr is not None, "the check needs OUTREACH_FHIR_BASE_URL"
    try:
        caps = parse_capabilities(rt.ehr.get("metadata"))
        findings: list[Finding] = []
        now = rt.clock.now()
        for rtype in rt.journeys.resource_types:
            findings += _changes(rt.ehr, caps, rtype, now)
        for journey in rt.journeys.scheduled:
            if journey.spec.trigger.search:
                findings.append(_campaign(rt.ehr, caps, journey.name,
                                          journey.spec.trigger.search, now))
        findings += _write_back(caps) + _scheduling(caps) + [_smart(rt.ehr)]
    except FhirAuthError as exc:
        raise EhrUnreachable(f"the EHR refused our credentials: {exc}") from exc
    except FhirUnavailable as exc:
        raise EhrUnreachable(f"the EHR cannot be reached: {exc}") from exc
    except FhirError as exc:  # metadata itself failed or was not a CapabilityStatement
        raise EhrUnreachable(f"the EHR did not answer its CapabilityStatement: {exc}") from exc
    return Report(base_url, caps.fhir_version, findings)


def as_table(report: Report) -> str:
    """Plain text for a ticket: one line per finding, the reason last (it may be long)."""
    rows = [("area", "for", "result", "status", "reason")] + [
        (f.area, f.subject, f.result, str(f.status), f.reason) for f in report.findings]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"EHR {report.base_url} (FHIR {report.fhir_version or 'version not stated'})", ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
              for r in rows]
    missing = report.missing
    lines.append("")
    lines.append("READY: the enabled journeys can run on this EHR" if not missing else
                 "NOT READY, missing: " + "; ".join(f"{f.area} {f.subject}: {f.result}"
                                                     for f in missing))
    return "\n".join(lines)
