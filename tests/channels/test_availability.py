"""When a patient can come: their words (English and Spanish) read into windows on their own
clock, said back to them, checked against slots across midnight and DST, stored as a code, and
written to and read from FHIR requestedPeriods."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.availability import (
    END_OF_DAY,
    MAX_CODES,
    MAX_PERIODS,
    MAX_WINDOWS,
    Availability,
    Window,
    from_requested_periods,
    parse,
    requested_periods,
)
from channels.inbound import MAX_READ, load_phrasebook, phrasebooks

NEW_YORK = ZoneInfo("America/New_York")
MADRID = ZoneInfo("Europe/Madrid")
WEEKDAYS = frozenset(range(5))


def _codes(text: str, language: str | None = None) -> str | None:
    found = parse(text, language)
    return found.to_codes() if found is not None else None


def _at(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)


# Reading the patient's words ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "codes"), [
    ("weekday mornings", "mo-fr@08:00-12:00"),
    ("Mornings", "mo-su@08:00-12:00"),
    ("afternoons", "mo-su@12:00-17:00"),
    ("evenings", "mo-su@17:00-20:00"),
    ("after 5 pm", "mo-su@17:00-24:00"),
    ("after 5", "mo-su@17:00-24:00"),
    ("after 5:30pm", "mo-su@17:30-24:00"),
    ("after 17:00", "mo-su@17:00-24:00"),
    ("after five", "mo-su@17:00-24:00"),
    ("before noon", "mo-su@00:00-12:00"),
    ("before 10 a.m.", "mo-su@00:00-10:00"),
    ("mondays and wednesdays", "mo,we@00:00-24:00"),
    ("tue/thu afternoon", "tu,th@12:00-17:00"),
    ("weekends", "sa-su@00:00-24:00"),
    ("any time", "mo-su@00:00-24:00"),
    ("Anytime after 3", "mo-su@15:00-24:00"),
    ("Mon-Fri 9-5", "mo-fr@09:00-17:00"),
    ("Monday through Thursday before 11am", "mo-th@00:00-11:00"),
    ("between 9 and 11am", "mo-su@09:00-11:00"),
    ("from 9 until 11", "mo-su@09:00-11:00"),
    ("8-10pm", "mo-su@20:00-22:00"),
    ("10-2pm", "mo-su@10:00-14:00"),
    ("noon to 3", "mo-su@12:00-15:00"),
    ("evenings after 6", "mo-su@18:00-20:00"),
    ("after 5 and before 8 pm", "mo-su@17:00-20:00"),
    ("mornings and afternoons", "mo-su@08:00-17:00"),
    ("weekday mornings or Saturday afternoons", "mo-fr@08:00-12:00;sa@12:00-17:00"),
    ("weekdays after 5 or saturdays", "mo-fr@17:00-24:00;sa@00:00-24:00"),
    ("Tuesdays 9-11 and Thursdays 2-4", "tu@09:00-11:00;th@14:00-16:00"),
    ("mornings except Fridays", "mo-th,sa-su@08:00-12:00"),
    ("evenings but not fridays", "mo-th,sa-su@17:00-20:00"),
    ("any time except mornings", "mo-su@00:00-08:00;mo-su@12:00-24:00"),
    ("I'm free Monday, Wednesday and Friday mornings", "mo,we,fr@08:00-12:00"),
    ("Mondays at 10 in the morning", "mo@08:00-12:00"),
    ("after work", "mo-su@17:00-20:00"),
    ("Good morning! Tuesdays work best", "tu@00:00-24:00"),
    ("Yes please, mornings are best", "mo-su@08:00-12:00"),
    ("mañanas entre semana", "mo-fr@08:00-12:00"),
    ("por las tardes", "mo-su@12:00-17:00"),
    ("por las noches", "mo-su@17:00-20:00"),
    ("después de las 5", "mo-su@17:00-24:00"),
    ("después de las 5 de la tarde", "mo-su@17:00-24:00"),
    ("después de la una", "mo-su@13:00-24:00"),
    ("a partir de las 18h", "mo-su@18:00-24:00"),
    ("antes del mediodía", "mo-su@00:00-12:00"),
    ("hasta el mediodía", "mo-su@00:00-12:00"),
    ("lunes y miércoles", "mo,we@00:00-24:00"),
    ("fines de semana", "sa-su@00:00-24:00"),
    ("de lunes a viernes por la mañana", "mo-fr@08:00-12:00"),
    ("los martes y jueves por la tarde", "tu,th@12:00-17:00"),
    ("lunes a viernes de 8 a 3", "mo-fr@08:00-15:00"),
    ("entre las 9 y las 11", "mo-su@09:00-11:00"),
    ("todos los días menos el domingo", "mo-sa@00:00-24:00"),
    ("Sí, por las tardes", "mo-su@12:00-17:00"),
    ("cuando sea", "mo-su@00:00-24:00"),
    ("Buenas tardes, los jueves", "th@00:00-24:00"),
    ("SÁBADOS POR LA MAÑANA", "sa@08:00-12:00"),
    # a "no" in a sentence of its own says no to something else (the times offered)
    ("No, mornings please", "mo-su@08:00-12:00"),
    ("Not sure. Maybe Tuesdays?", "tu@00:00-24:00"),
    ("No, solo por las mañanas", "mo-su@08:00-12:00"),
    ("before 10 a.m. on weekdays", "mo-fr@00:00-10:00"),
])
def test_a_patient_s_words_become_windows(text: str, codes: str | None) -> None:
    assert _codes(text) == codes


@pytest.mark.parametrize("text", [
    "yes", "Y", "stop", "STOP", "C", "X", "R", "1", "2", "10", "", "   ", "👍",
    "I can't make it", "Cancel my appointment", "ok thanks", "See you at 5", "17:30",
    "call me please", "wrong number", "sí", "no", "alto", "gracias",
    # what the patient can NOT do, or one day, is read by staff, never offered
    "not mornings", "I can't do mornings", "I work weekdays", "busy on Mondays",
    "no puedo por las mañanas", "trabajo entre semana", "tomorrow morning", "mañana por la tarde",
    "hoy", "next week", "this weekend", "mornings don't work for me", "Mornings are not possible",
    "I can't come in the mornings, but afternoons work", "Las mañanas no",
    "I can't make it, but any time next month works",
    # amounts are no times
    "1-2 weeks", "after 2 weeks", "después de 3 semanas",
])
def test_what_is_not_availability_is_none(text: str) -> None:
    assert parse(text) is None


def test_a_preferred_language_is_read_first_and_others_still_count() -> None:
    assert _codes("mañanas", "es") == _codes("mañanas", "en") == "mo-su@08:00-12:00"
    assert _codes("weekday mornings", "es") == "mo-fr@08:00-12:00"
    assert _codes("weekday mornings", "fr") == "mo-fr@08:00-12:00"


def test_only_the_first_sms_worth_of_text_is_read() -> None:
    assert parse("x " * (MAX_READ // 2) + "mornings") is None
    assert _codes("x " * (MAX_READ // 2 - 10) + "mornings") == "mo-su@08:00-12:00"


def test_more_windows_than_we_hold_is_left_to_staff() -> None:
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

    def said(count: int) -> str:
        return ", ".join(f"{days[i % 7]} {8 + i}:00-{8 + i}:30" for i in range(count))

    most = parse(said(MAX_WINDOWS))
    assert most is not None and len(most.windows) == MAX_WINDOWS
    assert parse(said(MAX_WINDOWS + 1)) is None


# Saying it back ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("codes", "english", "spanish"), [
    ("mo-fr@08:00-12:00", "weekday mornings", "lunes a viernes por la mañana"),
    ("mo-su@12:00-17:00", "afternoons", "por las tardes"),
    ("sa-su@17:00-20:00", "weekend evenings", "fines de semana por la noche"),
    ("mo-su@17:00-24:00", "after 5 pm", "después de las 17:00"),
    ("mo-su@00:00-12:00", "before noon", "antes de las 12:00"),
    ("mo-su@13:00-24:00", "after 1 pm", "después de las 13:00"),
    ("mo-su@09:30-11:00", "9:30 am to 11 am", "de las 9:30 a las 11:00"),
    ("mo-su@00:00-24:00", "any time", "a cualquier hora"),
    ("mo,we@00:00-24:00", "Mondays and Wednesdays", "lunes y miércoles"),
    ("tu,th@12:00-17:00", "Tuesday and Thursday afternoons", "martes y jueves por la tarde"),
    ("mo-th@00:00-11:00", "Monday to Thursday before 11 am", "lunes a jueves antes de las 11:00"),
    ("mo-th,sa-su@08:00-12:00", "mornings except Fridays", "por las mañanas excepto los viernes"),
    ("mo-sa@00:00-24:00", "any day except Sundays", "cualquier día excepto los domingos"),
    ("mo-fr@08:00-12:00;sa@12:00-17:00", "weekday mornings or Saturday afternoons",
     "lunes a viernes por la mañana o sábados por la tarde"),
])
def test_describe_is_short_in_the_patient_s_language(codes: str, english: str,
                                                     spanish: str) -> None:
    availability = Availability.from_codes(codes)
    assert availability.describe("en") == english
    assert availability.describe("es") == spanish
    assert availability.describe("fr") == availability.describe(None) == english


# A slot against the windows ----------------------------------------------------------------------

def test_a_slot_is_admitted_up_to_the_window_edges_and_not_past_them() -> None:
    mornings = Availability((Window(WEEKDAYS, time(8), time(12)),))
    monday = (2026, 6, 1)

    def slot(start: tuple[int, int], end: tuple[int, int]) -> bool:
        return mornings.admits(_at(NEW_YORK, *monday, *start), _at(NEW_YORK, *monday, *end),
                               NEW_YORK)

    assert slot((8, 0), (8, 30)) and slot((11, 30), (12, 0)) and slot((8, 0), (12, 0))
    assert not slot((7, 59), (8, 30))
    assert not slot((11, 30), (12, 1))
    assert not slot((12, 0), (12, 30))
    saturday = _at(NEW_YORK, 2026, 6, 6, 9, 0)
    assert not mornings.admits(saturday, saturday + timedelta(minutes=30), NEW_YORK)


def test_a_slot_is_read_on_the_patient_s_clock_not_utc() -> None:
    mornings = Availability((Window(WEEKDAYS, time(8), time(12)),))
    nine_in_new_york = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    assert mornings.admits(nine_in_new_york, nine_in_new_york + timedelta(minutes=30), NEW_YORK)
    assert not mornings.admits(nine_in_new_york, nine_in_new_york + timedelta(minutes=30), MADRID)


def test_a_slot_must_lie_in_one_window_and_not_cross_midnight() -> None:
    split = Availability.from_codes("mo-su@08:00-10:00;mo-su@10:00-12:00")
    assert not split.admits(_at(MADRID, 2026, 6, 1, 9, 30), _at(MADRID, 2026, 6, 1, 10, 30),
                            MADRID)
    late = Availability.from_codes("mo-su@20:00-24:00")
    assert late.admits(_at(MADRID, 2026, 6, 1, 23, 30), _at(MADRID, 2026, 6, 2, 0, 0), MADRID)
    assert not late.admits(_at(MADRID, 2026, 6, 1, 23, 30), _at(MADRID, 2026, 6, 2, 0, 30),
                           MADRID)
    assert not late.admits(_at(MADRID, 2026, 6, 1, 23, 0), _at(MADRID, 2026, 6, 3, 0, 0), MADRID)


def test_an_empty_or_backward_slot_is_never_admitted_and_naive_times_are_refused() -> None:
    anytime = Availability.from_codes("mo-su@00:00-24:00")
    noon = _at(MADRID, 2026, 6, 1, 12, 0)
    assert not anytime.admits(noon, noon, MADRID)
    assert not anytime.admits(noon, noon - timedelta(minutes=5), MADRID)
    with pytest.raises(ValueError, match="offset"):
        anytime.admits(datetime(2026, 6, 1, 12), datetime(2026, 6, 1, 13), MADRID)


@pytest.mark.parametrize(("zone", "before", "after"), [
    # the Friday before and the Monday after the spring change, 17:00 local each time
    (NEW_YORK, datetime(2026, 3, 6, 22, 0, tzinfo=UTC), datetime(2026, 3, 9, 21, 0, tzinfo=UTC)),
    (MADRID, datetime(2026, 3, 27, 16, 0, tzinfo=UTC), datetime(2026, 3, 30, 15, 0, tzinfo=UTC)),
])
def test_after_5_pm_stays_17_00_local_across_the_spring_dst_change(
        zone: ZoneInfo, before: datetime, after: datetime) -> None:
    evenings = parse("after 5 pm")
    assert evenings is not None
    hour = timedelta(hours=1)
    assert evenings.admits(before, before + hour, zone)
    assert evenings.admits(after, after + hour, zone)
    # the same UTC time as before the change is 18:00 after it; an hour earlier is 16:00
    assert not evenings.admits(after - hour, after, zone)


def test_a_window_across_the_dst_change_holds_its_wall_clock_hours() -> None:
    night = Availability.from_codes("su@01:00-04:00")
    # New York springs forward at 02:00 on Sunday 8 March 2026: 01:00-04:00 is two real hours
    start, end = _at(NEW_YORK, 2026, 3, 8, 1, 0), _at(NEW_YORK, 2026, 3, 8, 4, 0)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=2)
    assert night.admits(start, end, NEW_YORK)
    # falls back at 02:00 on Sunday 1 November: 01:30 happens twice, both inside the window
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert night.admits(first, second, NEW_YORK)
    assert night.admits(second, second + timedelta(minutes=20), NEW_YORK)


# FHIR requestedPeriod ---------------------------------------------------------------------------

def test_requested_periods_cover_each_window_in_the_range_earliest_first() -> None:
    mornings = Availability.from_codes("mo-fr@08:00-12:00")
    start, end = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 15, tzinfo=UTC)
    periods = requested_periods(mornings, NEW_YORK, start, end)
    assert len(periods) == 10
    assert periods[0] == {"start": "2026-06-01T08:00:00-04:00", "end": "2026-06-01T12:00:00-04:00"}
    assert periods[-1]["start"] == "2026-06-12T08:00:00-04:00"
    starts = [datetime.fromisoformat(p["start"]) for p in periods]
    assert starts == sorted(starts)
    assert all(start <= datetime.fromisoformat(p["start"]) < datetime.fromisoformat(p["end"])
               <= end for p in periods)


def test_requested_periods_are_clipped_to_the_range_and_bounded() -> None:
    anytime = Availability.from_codes("mo-su@00:00-24:00")
    start = datetime(2026, 6, 1, 12, 0, 0, 500_000, tzinfo=MADRID)
    end = datetime(2026, 6, 3, 6, 0, 0, 250_000, tzinfo=MADRID)
    periods = requested_periods(anytime, MADRID, start, end)
    assert [p["start"] for p in periods] == ["2026-06-01T12:00:01+02:00",
                                            "2026-06-02T00:00:00+02:00",
                                            "2026-06-03T00:00:00+02:00"]
    assert periods[-1]["end"] == "2026-06-03T06:00:00+02:00"
    year = requested_periods(anytime, MADRID, start, start + timedelta(days=365), max_periods=20)
    assert len(year) == 20
    assert requested_periods(anytime, MADRID, end, start) == []
    with pytest.raises(ValueError, match="max_periods"):
        requested_periods(anytime, MADRID, start, end, max_periods=MAX_PERIODS + 1)
    with pytest.raises(ValueError, match="offset"):
        requested_periods(anytime, MADRID, datetime(2026, 6, 1), end)


def test_requested_periods_follow_the_dst_change() -> None:
    mornings = Availability.from_codes("sa-su@08:00-12:00")
    start, end = datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC)
    assert requested_periods(mornings, MADRID, start, end) == [
        {"start": "2026-03-28T08:00:00+01:00", "end": "2026-03-28T12:00:00+01:00"},
        {"start": "2026-03-29T08:00:00+02:00", "end": "2026-03-29T12:00:00+02:00"},
    ]
    whole = requested_periods(Availability.from_codes("su@00:00-24:00"), NEW_YORK,
                              datetime(2026, 3, 8, 5, tzinfo=UTC),
                              datetime(2026, 3, 9, 5, tzinfo=UTC))
    assert whole == [{"start": "2026-03-08T00:00:00-05:00", "end": "2026-03-09T00:00:00-04:00"}]
    # a window starting in the skipped hour starts when the clock does
    gap = requested_periods(Availability.from_codes("su@02:30-05:00"), NEW_YORK,
                            datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC))
    assert gap == [{"start": "2026-03-08T03:30:00-04:00", "end": "2026-03-08T05:00:00-04:00"}]


def test_periods_written_admit_the_same_slots_as_the_windows() -> None:
    availability = Availability.from_codes("mo-fr@08:00-12:00;sa@09:00-13:00")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    admits = from_requested_periods(requested_periods(availability, NEW_YORK, start,
                                                      start + timedelta(days=28), 60))
    slot = timedelta(minutes=30)
    for hours in range(0, 28 * 24 * 2):
        at = start + timedelta(minutes=30 * hours)
        assert admits(at, at + slot) == availability.admits(at, at + slot, NEW_YORK), at


def test_periods_read_from_the_ehr_admit_slots_inside_one() -> None:
    admits = from_requested_periods([
        {"start": "2026-06-01T08:00:00-04:00", "end": "2026-06-01T12:00:00-04:00"},
        {"start": "2026-06-02T13:00:00Z"},  # open-ended: from then on
    ])
    assert admits(_at(NEW_YORK, 2026, 6, 1, 8, 0), _at(NEW_YORK, 2026, 6, 1, 12, 0))
    assert admits(datetime(2026, 6, 1, 12, 0, tzinfo=UTC), datetime(2026, 6, 1, 13, tzinfo=UTC))
    assert not admits(_at(NEW_YORK, 2026, 6, 1, 11, 30), _at(NEW_YORK, 2026, 6, 1, 12, 30))
    assert not admits(_at(NEW_YORK, 2026, 6, 2, 8, 0), _at(NEW_YORK, 2026, 6, 2, 8, 30))
    assert admits(_at(NEW_YORK, 2026, 12, 1, 8, 0), _at(NEW_YORK, 2026, 12, 1, 8, 30))
    assert not admits(datetime(2026, 6, 1, 9), datetime(2026, 6, 1, 10))  # naive: no


@pytest.mark.parametrize("periods", [
    None, "2026-06-01", {"start": "2026-06-01T08:00:00Z"}, [None], ["period"], [{}],
    [{"start": "2026-06-01"}],  # a date alone has no zone
    [{"start": "2026-06-01T08:00:00"}],  # nor a time without its offset
    [{"start": "2026-06-01T12:00:00Z", "end": "2026-06-01T08:00:00Z"}],
    [{"start": "2026-06-01T08:00:00Z", "end": "tomorrow"}],
    [{"start": "2026-13-01T08:00:00Z", "end": "2026-13-01T12:00:00Z"}],
    [{"start": "٢٠٢٦-06-01T08:00:00Z"}],
    [{"start": "0001-01-01T00:00:00+14:00"}],
    [{"start": 20260601, "end": ["2026-06-02T00:00:00Z"]}],
    [{"start": "2026-06-01T08:00:00Z" + "0" * 100}],
])
def test_malformed_periods_are_ignored(periods: object) -> None:
    admits = from_requested_periods(periods)  # type: ignore[arg-type]
    assert not admits(datetime(2026, 6, 1, 9, tzinfo=UTC), datetime(2026, 6, 1, 10, tzinfo=UTC))


def test_only_the_first_periods_are_read() -> None:
    junk = [{"start": "2020-01-01T00:00:00Z", "end": "2020-01-01T00:01:00Z"}] * MAX_PERIODS
    admits = from_requested_periods([*junk, {"start": "2026-01-01T00:00:00Z"}])
    assert not admits(datetime(2026, 6, 1, 9, tzinfo=UTC), datetime(2026, 6, 1, 10, tzinfo=UTC))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(["start", "end", "x"]), inner, max_size=3),
                     max_leaves=12)
_INSTANTS = st.datetimes(timezones=st.sampled_from([UTC, NEW_YORK, MADRID])).map(
    lambda d: d.isoformat())


@settings(max_examples=300, deadline=None)
@given(st.lists(_JSON | st.fixed_dictionaries(
    {}, optional={"start": _INSTANTS | _JSON, "end": _INSTANTS | _JSON}), max_size=8),
       st.datetimes(timezones=st.just(UTC)), st.timedeltas(min_value=timedelta(0)))
def test_reading_periods_never_raises(periods: list[object], start: datetime,
                                      length: timedelta) -> None:
    admits = from_requested_periods(periods)
    try:
        end = start + length
    except OverflowError:
        end = start
    assert admits(start, end) in (True, False)


# Storage codes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("codes", [
    "mo-fr@08:00-12:00", "mo-fr@08:00-12:00;sa@09:00-13:00", "mo,we,fr@17:00-24:00",
    "su@00:00-24:00", "mo-tu,th-su@00:00-00:01",
])
def test_canonical_codes_read_back_to_themselves(codes: str) -> None:
    assert Availability.from_codes(codes).to_codes() == codes


def test_codes_in_any_order_read_to_the_same_windows() -> None:
    assert Availability.from_codes("fr,mo-th@08:00-12:00") == Availability.from_codes(
        "mo-fr@08:00-12:00")
    assert Availability.from_codes("mo-fr@17:00-24:00").windows[0].end == END_OF_DAY


@pytest.mark.parametrize("codes", [
    "", " ", "mornings", "mo-fr", "mo-fr@08:00", "mo-fr@8:00-12:00", "mo-fr@08:00-12:00;",
    ";mo-fr@08:00-12:00", "xx@08:00-12:00", "fr-mo@08:00-12:00", "mo-mo@08:00-12:00",
    "mo,mo@08:00-12:00", "mo,mo-tu@08:00-12:00", "mo@12:00-08:00", "mo@08:00-08:00",
    "mo@24:00-24:00", "mo@08:00-24:01", "mo@08:60-09:00", "mo@25:00-26:00", "MO@08:00-12:00",
    "mo@08:00-12:00 ", "mo@٠٨:00-12:00", "mo@08:00-12:00\n",
    ";".join(["mo@08:00-09:00"] * (MAX_WINDOWS + 1)),
    "mo," * 100 + "tu@08:00-09:00",
])
def test_malformed_codes_are_refused(codes: str) -> None:
    with pytest.raises(ValueError):
        Availability.from_codes(codes)


def test_oversized_codes_are_refused_before_reading() -> None:
    with pytest.raises(ValueError, match=str(MAX_CODES)):
        Availability.from_codes("mo@08:00-09:00;" * 100)
    with pytest.raises(ValueError):
        Availability.from_codes(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("days", "start", "end"), [
    (frozenset(), time(8), time(12)), (frozenset({7}), time(8), time(12)),
    (frozenset({True}), time(8), time(12)), ({0}, time(8), time(12)),
    (WEEKDAYS, time(12), time(8)), (WEEKDAYS, time(8), time(8)),
    (WEEKDAYS, time(8, 0, 30), time(12)), (WEEKDAYS, END_OF_DAY, END_OF_DAY),
    (WEEKDAYS, time(8, tzinfo=UTC), time(12, tzinfo=UTC)),
])
def test_a_window_is_checked_when_made(days: frozenset[int], start: time, end: time) -> None:
    with pytest.raises(ValueError):
        Window(days, start, end)


def test_an_availability_holds_one_to_a_bounded_number_of_windows() -> None:
    window = Window(WEEKDAYS, time(8), time(12))
    with pytest.raises(ValueError):
        Availability(())
    with pytest.raises(ValueError):
        Availability((window,) * (MAX_WINDOWS + 1))
    with pytest.raises(ValueError):
        Availability([window])  # type: ignore[arg-type]


_RAW_WINDOWS = st.lists(
    st.tuples(st.sets(st.integers(0, 6), min_size=1), st.integers(0, 1439), st.integers(1, 1440))
    .filter(lambda t: t[1] < t[2]), min_size=1, max_size=MAX_WINDOWS)


@given(_RAW_WINDOWS)
def test_any_availability_round_trips_through_its_code(
        raw: list[tuple[set[int], int, int]]) -> None:
    def clock(m: int) -> time:
        return END_OF_DAY if m == 1440 else time(m // 60, m % 60)

    availability = Availability(tuple(Window(frozenset(d), clock(a), clock(b)) for d, a, b in raw))
    codes = availability.to_codes()
    assert len(codes) <= MAX_CODES
    assert Availability.from_codes(codes) == availability


# Never raises, always bounded --------------------------------------------------------------------

_VOCABULARY = sorted({phrase for book in phrasebooks() for phrases in book.availability.values()
                      for phrase in phrases} | {"5", "9", "11:30", "17h", "-", "/", ",", "pm",
                                                "24", "0", "99", "12", "stop", "yes"})


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300) | st.lists(st.sampled_from(_VOCABULARY), max_size=40).map(" ".join),
       st.sampled_from([None, "en", "es", "xx"]))
def test_parse_never_raises_and_stays_in_bounds(text: str, language: str | None) -> None:
    found = parse(text, language)
    if found is not None:
        assert 1 <= len(found.windows) <= MAX_WINDOWS
        assert Availability.from_codes(found.to_codes()) == found
        assert found.describe(language)


def test_a_huge_reply_is_read_only_in_part() -> None:
    found = parse("weekday mornings or after 5 " * 5000)
    assert found is not None and found.to_codes() == "mo-fr@08:00-12:00;mo-fr@17:00-24:00"


# The phrasebooks -------------------------------------------------------------------------------

def test_every_shipped_language_says_when_a_patient_can_come() -> None:
    for book in phrasebooks():
        assert {"monday", "morning", "after", "negation"} <= set(book.availability)


def test_an_unknown_availability_list_is_refused(tmp_path: Path) -> None:
    book = tmp_path / "xx.yaml"
    book.write_text("availability:\n  mornings: [morning]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown list"):
        parse("morning", books=(load_phrasebook(book),))


def test_an_availability_section_must_be_lists_of_phrases(tmp_path: Path) -> None:
    book = tmp_path / "xx.yaml"
    book.write_text("availability: [morning]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="availability"):
        load_phrasebook(book)
    book.write_text("availability:\n  negation: [no]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="quote it"):
        load_phrasebook(book)


def test_a_phrase_in_two_lists_of_one_language_is_refused(tmp_path: Path) -> None:
    book = tmp_path / "xx.yaml"
    book.write_text("availability:\n  morning: [am]\n  evening: [am]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="both"):
        parse("am", books=(load_phrasebook(book),))


def test_a_phrasebook_of_our_own_reads_our_words(tmp_path: Path) -> None:
    book = tmp_path / "xx.yaml"
    book.write_text("availability:\n  morning: [matin]\n  saturday: [samedi]\n",
                    encoding="utf-8")
    assert parse("samedi matin", books=(load_phrasebook(book),)) == Availability.from_codes(
        "sa@08:00-12:00")
