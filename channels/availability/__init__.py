"""When a patient can come, as recurring windows on their own clock: read from their words
(English and Spanish), checked against a slot, described back to them, stored as a short code,
and written to and read from FHIR `requestedPeriod`s.

Parts of the day (defined once, in `clock`): morning 08:00-12:00, afternoon 12:00-17:00, evening
17:00-20:00; "after 5" runs to 24:00 and "before noon" from 00:00. A bare hour is read in clinic
hours: 1-7 are pm ("after 5" is 17:00), 8-12 as written; "5 am", "17:00", "las 5 de la tarde"
say so. A window never wraps past midnight; `END_OF_DAY` (`time.max`) as its end means 24:00.
Slots are judged on the patient's wall clock in their zone (zoneinfo), so "after 5 pm" stays
17:00 across a DST change.

The phrases are data: the `availability:` section of `channels/replies/{language}.yaml`.

Modules: `clock` (the day in minutes, parts of the day), `model` (Window, Availability, codes),
`wording` (describe), `periods` (FHIR Periods), `phrases` (words to symbols), `clauses` and
`reading` (symbols to windows: `parse`)."""

from channels.availability.clock import END_OF_DAY, PARTS_OF_DAY
from channels.availability.model import MAX_CODES, MAX_WINDOWS, Availability, Window
from channels.availability.periods import MAX_PERIODS, from_requested_periods, requested_periods
from channels.availability.reading import parse

__all__ = [
    "END_OF_DAY",
    "MAX_CODES",
    "MAX_PERIODS",
    "MAX_WINDOWS",
    "PARTS_OF_DAY",
    "Availability",
    "Window",
    "from_requested_periods",
    "parse",
    "requested_periods",
]
