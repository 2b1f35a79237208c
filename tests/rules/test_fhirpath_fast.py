"""The compiled FHIRPath subset answers exactly as fhirpathpy does (differential, with hypothesis),
and everything outside it still goes to fhirpathpy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fhirpathpy.engine.nodes import FP_DateTime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.fhirpath import Condition, FhirPathError, SharedResults
from rules.fhirpath_fast import Bail, Moment

JOURNEYS = Path(__file__).resolve().parents[2] / "rules" / "journeys"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def shipped_conditions() -> list[str]:
    found: set[str] = set()
    for path in [*JOURNEYS.glob("*.yaml"), *JOURNEYS.glob("library/*.yaml")]:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for source in (data.get("trigger", {}).get("when"), data.get("cancel_when")):
            if source:
                found.add(source)
    return sorted(found)


SHIPPED = shipped_conditions()

# Hand-written expressions around the edges of the subset: empty operands, three-valued logic,
# mixed types, partial dates, resourceType filters, criteria, variables.
EDGES = [
    "{} = 'x'", "{} != 'x'", "'x' = {}", "{} and true", "{} and false", "true and {}",
    "false and {}", "{} or true", "{} or false", "true or {}", "false or {}", "{} and {}",
    "{} or {}", "{}.not()", "true.not()", "false.not()", "status.not()", "(status = 'x').not()",
    "status = 'booked' or start > now()", "status != 'booked'", "status = status",
    "status in ('booked' | 'pending' | 'booked')", "status in {}", "start > now()",
    "start >= now()", "start < now()", "start <= now()", "start = now()", "start != now()",
    "now() > start", "start > today()", "start = today()", "today() = start",
    "period.start < period.end", "period.end > now()", "start > '2026-03-01'",
    "start > @2026-03-02T12:00:00Z", "start < @2026-03-02",
    "participant.period.start > now()", "participant.status = 'accepted'",
    "participant.actor.reference = 'Patient/p1'", "participant.exists(status = 'accepted')",
    "participant.where(status = 'accepted').actor.reference = 'Patient/p1'",
    "participant.count() > 1", "participant.count() = 0", "participant.empty()",
    "participant.exists()", "exists()", "empty()", "count() = 1",
    "serviceCategory.coding.exists(code = 'procedure')", "class.code = 'AMB'",
    "class.code in ('AMB' | 'IMP' | 'EMER')", "Appointment.status = 'booked'",
    "Encounter.status = 'finished'", "%current.status = 'booked'",
    "%previous.status = 'booked' and %current.status = 'cancelled'",
    "%previous.status != %current.status", "%previous.exists()", "%previous.start < start",
    "%resource.status = 'booked'", "%context.status = 'booked'", "%current = %resource",
    "minutesDuration > 30", "minutesDuration = 30", "minutesDuration >= 30.5",
    "minutesDuration in (30 | 45)", "priority < 1", "-1 < 2.5", "1 = 1.0", "'a' < 'b'",
    "status > 'a'", "status < 5", "status and true", "active and true", "active = true",
    "active", "status", "start", "now()", "today()", "participant", "participant.period",
    "status.exists() and start.exists()", "participant.exists($this.status = 'accepted')",
    "participant.exists(actor.exists())", "participant.where(period.start > now()).exists()",
    "`status` = 'booked'", "status.count() = 1 and status = 'booked'",
    "contained.status = 'booked'", "contained.exists()", "text.status = 'generated'",
    "extension.exists()", "status.length > 3", "status.exists(true)",
]

# Outside the subset: compiled by fhirpathpy alone.
NOT_COMPILED = [
    "birthDate.toString().substring(5) = today().toString().substring(5)",
    "status ~ 'BOOKED'", "status.where(true).first() = 'booked'", "status implies true",
    "status xor true", "status contains 'b'", "$this.status = 'booked'", "%ucum.exists()",
    "start + 1 day > now()", "status.startsWith('b')", "iif(status = 'booked', true, false)",
    "start > @T12:00", "start < @2026-03", "participant.exists(actor)",
    "participant.select(status).exists()", "status in participant.status",
]


def reference(cond: Condition, resource: dict[str, Any], now: datetime,
              previous: dict[str, Any] | None) -> tuple[str, Any]:
    try:
        return "ok", normalise(cond.evaluate_reference(resource, now, previous))
    except FhirPathError:
        return "error", None


def fast(cond: Condition, resource: dict[str, Any], now: datetime,
         previous: dict[str, Any] | None) -> tuple[str, Any]:
    assert cond._fast is not None
    try:
        return "ok", normalise(cond._fast.run(resource, previous, now))
    except Bail:
        return "bail", None


def normalise(value: Any) -> Any:
    """fhirpathpy's output shaping (floats as Decimals, extension-only dicts dropped from lists),
    with dateTimes as their text, and types kept apart (1 and True and Decimal(1) differ)."""
    if isinstance(value, list):
        items = [normalise(item) for item in value]
        return ["list", [i for i in items if not (i[0] == "dict" and list(i[1]) == ["extension"])]]
    if isinstance(value, dict):
        return ["dict", {k: normalise(v) for k, v in value.items()}]
    if isinstance(value, FP_DateTime):
        return ["dateTime", value.asStr]
    if isinstance(value, Moment):
        return ["dateTime", value.text]
    if isinstance(value, float):
        value = Decimal(str(value))
    return [type(value).__name__, repr(value)]


def agree(source: str, resource: dict[str, Any], now: datetime,
          previous: dict[str, Any] | None) -> str:
    """Check one evaluation; return how the fast path answered (ok, bail or not compiled)."""
    cond = Condition(source)
    expected = reference(cond, resource, now, previous)
    if cond._fast is None:
        outcome = "fallback"
    else:
        outcome, got = fast(cond, resource, now, previous)
        if expected[0] == "error":
            # fhirpathpy raises: the fast path must not answer, so the error surfaces.
            assert outcome == "bail", (source, resource, previous, got)
        elif outcome == "ok":
            assert got == expected[1], (source, resource, previous, now)
    if expected[0] == "error":
        with pytest.raises(FhirPathError):
            cond(resource, now, previous)
    else:
        truth = Condition(source)(resource, now, previous)
        items = expected[1][1]
        assert truth == (bool(items) and all(i == ["bool", "True"] for i in items)), source
    return outcome


# ------------------------------------------------------------------------- data strategies

def _instant(moment: datetime, fraction: int, offset_minutes: int) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    text = moment.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds")
    if fraction:
        text += "." + str(fraction)
    if offset_minutes == 0 and fraction % 2 == 0:
        return text + "Z"
    sign = "+" if offset_minutes >= 0 else "-"
    return text + f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"


moments = st.datetimes(min_value=datetime(2026, 2, 20), max_value=datetime(2026, 3, 12),
                       timezones=st.just(UTC))
offsets = st.sampled_from([0, 0, 60, -300, 330, -720, 840])
instants = st.builds(_instant, moments, st.sampled_from([0, 0, 0, 5, 123, 999999]), offsets)
odd_dates = st.sampled_from([
    "2026-03-02", "2026-03-03", "2026-03", "2026", "2026-03-02T12:00:00", "2026-03-02T12:00Z",
    "2026-03-02T12:00:00.1234567Z", "2026-02-30T10:00:00Z", "not a date", "", "12:00:00",
    "2026-03-02T24:00:00Z",
])
dates = st.one_of(instants, instants, odd_dates)
codes = st.sampled_from(["booked", "pending", "cancelled", "noshow", "entered-in-error",
                         "finished", "in-progress", "AMB", "IMP", "EMER", "procedure", "general",
                         "accepted", "Booked", " booked", ""])
scalars = st.one_of(codes, st.integers(-2, 60), st.sampled_from([30.0, 30.5, 0.1, True, False]),
                    st.none())
extension = st.just({"extension": [{"url": "http://example.org/x", "valueString": "x"}]})


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(None), strategy, strategy)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


coding = st.builds(lambda code, system: _drop_none({"code": code, "system": system}),
                   maybe(codes), maybe(st.just("http://example.org")))
codeable = st.builds(lambda codings: {"coding": codings}, st.lists(coding, max_size=3))
period = st.builds(lambda s, e: _drop_none({"start": s, "end": e}), maybe(dates), maybe(dates))
participant = st.builds(
    lambda ref, status, per: _drop_none({"actor": {"reference": ref} if ref else None,
                                         "status": status, "period": per}),
    maybe(st.sampled_from(["Patient/p1", "Patient/p2", "Practitioner/d1"])), maybe(codes),
    maybe(period))
contained = st.builds(lambda status: {"resourceType": "Patient", "status": status}, codes)


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["Appointment", "Appointment", "Encounter", None, "Patient"]))
    fields: dict[str, Any] = {
        "resourceType": kind,
        "id": "r1",
        "status": draw(st.one_of(maybe(codes), scalars, st.lists(codes, max_size=2))),
        "_status": draw(st.one_of(st.none(), st.none(), extension)),
        "start": draw(maybe(dates)),
        "participant": draw(st.one_of(st.none(), st.lists(participant, max_size=3),
                                      participant)),
        "serviceCategory": draw(st.one_of(st.none(), st.lists(codeable, max_size=2))),
        "class": draw(maybe(coding)),
        "period": draw(maybe(period)),
        "minutesDuration": draw(st.one_of(st.none(), scalars)),
        "active": draw(st.one_of(st.none(), st.booleans(), codes)),
        "priority": draw(st.one_of(st.none(), st.integers(0, 3))),
        "contained": draw(st.one_of(st.none(), st.none(), st.lists(contained, max_size=1))),
    }
    return _drop_none(fields)


clocks = st.one_of(
    st.just(NOW),
    st.builds(lambda m, us: m.replace(microsecond=us), moments, st.sampled_from([0, 0, 1, 500000])),
    st.builds(lambda m, h: m.astimezone(timezone(timedelta(hours=h))), moments,
              st.sampled_from([-5, 1, 9])),
    st.just(datetime(2026, 3, 2, 12, 0)),  # naive: fhirpathpy's local-time rules, not compiled
)

# Generated expressions from the subset's grammar.
paths = st.sampled_from([
    "status", "start", "period.start", "period.end", "participant.status",
    "participant.actor.reference", "participant.period.start", "class.code",
    "serviceCategory.coding.code", "minutesDuration", "active", "priority", "%previous.status",
    "%previous.start", "%current.start", "Appointment.status", "Encounter.class.code",
    "contained.status", "id",
])
literals = st.sampled_from(["'booked'", "'AMB'", "'accepted'", "30", "30.5", "true", "{}",
                            "'2026-03-02'", "@2026-03-02T12:00:00Z", "@2026-03-02", "0"])
values = st.one_of(paths, literals, st.sampled_from(["now()", "today()"]),
                   st.builds(lambda p: f"{p}.count()", paths))


def _boolean(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, op, b: f"({a} {op} {b})", children,
                  st.sampled_from(["and", "or"]), children),
        st.builds(lambda a: f"({a}).not()", children),
        st.builds(lambda p, c: f"{p.rsplit('.', 1)[0]}.exists({c})",
                  st.sampled_from(["participant.status", "serviceCategory.coding.code",
                                   "participant.period.start"]), children),
    )


atoms = st.one_of(
    st.builds(lambda a, op, b: f"{a} {op} {b}", values,
              st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), values),
    st.builds(lambda p, opts: f"{p} in ({' | '.join(opts)})", paths,
              st.lists(literals.filter(lambda s: s != "{}"), min_size=1, max_size=3)),
    st.builds(lambda p, f: f"{p}.{f}()", paths, st.sampled_from(["exists", "empty"])),
    st.builds(lambda a, op, b: f"{a} {op} {b}",
              st.sampled_from(["code", "status", "start", "$this"]), st.sampled_from(["=", ">"]),
              st.sampled_from(["'procedure'", "'accepted'", "now()"])),
)
expressions = st.recursive(atoms, _boolean, max_leaves=4)

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(resource=resources(), previous=maybe(resources()), now=clocks,
       source=st.sampled_from([*SHIPPED, *EDGES]))
def test_corpus_agrees_with_fhirpathpy(resource: dict[str, Any], previous: dict[str, Any] | None,
                                       now: datetime, source: str) -> None:
    agree(source, resource, now, previous)


@SETTINGS
@given(resource=resources(), previous=maybe(resources()), now=clocks, source=expressions)
def test_generated_expressions_agree_with_fhirpathpy(
    resource: dict[str, Any], previous: dict[str, Any] | None, now: datetime, source: str,
) -> None:
    # Sub-expressions with `$this` or criteria at the top are not always compiled; either way
    # the answer must be fhirpathpy's.
    agree(source, resource, now, previous)


@pytest.mark.parametrize("source", EDGES)
def test_every_edge_expression_is_compiled(source: str) -> None:
    assert Condition(source).compiled, source


@pytest.mark.parametrize("source", NOT_COMPILED)
def test_expressions_outside_the_subset_fall_back_to_fhirpathpy(source: str) -> None:
    cond = Condition(source)
    assert not cond.compiled
    resource = {"resourceType": "Appointment", "status": "booked", "start": "2026-03-06T09:00Z",
                "participant": [{"status": "accepted", "actor": {"reference": "Patient/p1"}}]}
    assert agree(source, resource, NOW, None) == "fallback"


@pytest.mark.parametrize("source", [s for s in SHIPPED if "toString" not in s])
def test_shipped_conditions_run_on_the_fast_path_for_ordinary_resources(source: str) -> None:
    cond = Condition(source)
    assert cond.compiled
    for status in ("booked", "cancelled"):
        appointment = {"resourceType": "Appointment", "status": status,
                       "start": "2026-03-06T09:00:00Z",
                       "serviceCategory": [{"coding": [{"code": "procedure"}]}],
                       "participant": [{"actor": {"reference": "Patient/p1"}}]}
        encounter = {"resourceType": "Encounter", "status": "finished",
                     "class": {"code": "AMB"}, "period": {"start": "2026-03-01T08:00:00Z"}}
        for resource in (appointment, encounter):
            assert agree(source, resource, NOW, appointment) == "ok"


@pytest.mark.parametrize(("source", "expected"), [
    # FHIRPath's three-valued logic, empty propagating through = and comparisons.
    ("{} = 'x'", []), ("{} and true", []), ("{} and false", [False]), ("{} or true", [True]),
    ("{} or false", []), ("{}.not()", []), ("status = 'nope'", [False]),
    ("cancelationReason.text = 'x'", []), ("start > now()", [True]),
])
def test_known_answers(source: str, expected: list[Any] | None) -> None:
    resource = {"resourceType": "Appointment", "status": "booked",
                "start": "2026-03-06T09:00:00+01:00"}
    cond = Condition(source)
    assert cond.evaluate(resource, NOW) == cond.evaluate_reference(resource, NOW) == expected


@pytest.mark.parametrize("start", ["2026-03", "2026-03-06", "2026-03-06T09:00:00",
                                   "2026-03-06T09:00Z"])
def test_partial_precision_data_is_answered_by_fhirpathpy(start: str) -> None:
    cond = Condition("start > now()")
    assert cond._fast is not None
    with pytest.raises(Bail):
        cond._fast.run({"start": start}, None, NOW)
    assert cond.evaluate({"start": start}, NOW) == cond.evaluate_reference({"start": start}, NOW)


def test_instants_compare_as_instants_across_time_zones() -> None:
    later = Condition("start > now()")
    # 09:30+01:00 is 08:30Z: before 09:00Z.
    assert later({"start": "2026-03-02T09:30:00+01:00"}, datetime(2026, 3, 2, 9, tzinfo=UTC)) \
        is False
    assert later({"start": "2026-03-02T09:30:00-01:00"}, datetime(2026, 3, 2, 9, tzinfo=UTC)) \
        is True


def test_a_failing_expression_still_raises_fhirpath_error() -> None:
    with pytest.raises(FhirPathError, match="FHIRPath failed"):
        Condition("status and true")({"status": "booked"}, NOW)
    with pytest.raises(FhirPathError, match="FHIRPath failed"):
        Condition("Appointment.status = 'x'")({"status": "booked"}, NOW)  # no resourceType


def test_shared_results_evaluate_each_source_once_per_change() -> None:
    resource = {"resourceType": "Appointment", "status": "booked", "start": "2026-03-06T09:00Z"}
    first, second = Condition("status = 'booked'"), Condition("status = 'booked'")
    shared = SharedResults(resource, None, NOW)
    assert first(resource, NOW, None, shared) is True
    shared.results["status = 'booked'"] = False  # what a second evaluation would not overwrite
    assert second(resource, NOW, None, shared) is False
    # Another resource, previous version or clock: the shared results are not used.
    assert second({**resource}, NOW, None, shared) is True
    assert second(resource, NOW, {}, shared) is True
    assert second(resource, NOW + timedelta(0), None, shared) is True


def test_shared_results_do_not_remember_failures() -> None:
    resource = {"status": "booked"}
    shared = SharedResults(resource, None, NOW)
    for _ in range(2):
        with pytest.raises(FhirPathError):
            Condition("status and true")(resource, NOW, None, shared)
    assert shared.results == {}
