"""The access log never holds a patient's preference-link token."""

from __future__ import annotations

import logging

from outreach.api.access_log import RedactPatientLinks


def _line(path: str) -> str:
    # uvicorn's access log format and arguments (uvicorn.logging.AccessFormatter).
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", path, "1.1", 200), None)
    RedactPatientLinks().filter(record)
    return record.getMessage()


def test_the_token_of_a_preference_link_is_not_logged() -> None:
    line = _line("/p/YWJjfGVzfDZiMzdmZGNh.e_fRYuHIgqAh-veqB0so2Q?saved=yes")
    assert "YWJj" not in line and "e_fRY" not in line
    assert '"GET /p/…?saved=yes HTTP/1.1" 200' in line


def test_other_paths_are_logged_as_they_are() -> None:
    assert '"GET /dashboard?from=2026-03-01 HTTP/1.1"' in _line("/dashboard?from=2026-03-01")
    assert "/smart/timeline" in _line("/smart/timeline")
