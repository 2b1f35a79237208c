"""Hot reload of journey files: a JourneySet that re-reads OUTREACH_RULES_DIR when it changes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rules.loader import JourneyError, JourneySet, journey_files, load_journeys

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(location: Path) -> Fingerprint:
    """Names, modification times and sizes of the journey files: any edit, addition or removal
    changes it."""
    files = journey_files(location) if location.exists() else []
    found = []
    for file in files:
        try:
            stat = file.stat()
        except FileNotFoundError:  # removed between the listing and the stat
            continue
        found.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


class ReloadingJourneySet(JourneySet):
    """Checks the files at most every `interval` seconds, on use. A change that loads cleanly
    replaces the whole set at once; one that does not is logged (file:line:col) and the set in
    use stays, so a typo saved in production never stops the service."""

    def __init__(self, location: Path, templates: Iterable[str] | None = None,
                 interval: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.location, self.interval, self._clock = location, interval, clock
        self._templates = list(templates) if templates is not None else None
        self._seen = fingerprint(location)
        self._checked = clock()
        self._lock = threading.Lock()
        self.last_error: JourneyError | None = None
        super().__init__(load_journeys(location, self._templates).journeys)

    def _refresh(self) -> None:
        if self._clock() - self._checked < self.interval or not self._lock.acquire(blocking=False):
            return  # checked recently, or another thread is checking right now
        try:
            self._checked = self._clock()
            current = fingerprint(self.location)
            if current == self._seen:
                return
            self._seen = current
            self._reload()
        finally:
            self._lock.release()

    def _reload(self) -> None:
        try:
            loaded = load_journeys(self.location, self._templates)
        except JourneyError as exc:
            self.last_error = exc
            log.error("journeys in %s not reloaded, keeping the %d in use:\n%s",
                      self.location, len(self._state[0]), exc)
            return
        self.last_error = None
        self._set(loaded.journeys)
        log.info("journeys reloaded from %s: %s", self.location,
                 ", ".join(f"{j.name}@{j.version}" for j in loaded.journeys))
