"""The access log never holds a patient's preference-link token, nor a SMART launch id,
authorization code, state or page token."""

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


def test_a_smart_launch_and_callback_are_logged_without_their_secrets() -> None:
    launch = _line("/smart/launch?iss=https%3A%2F%2Fehr.example%2Ffhir&launch=ctx-91f2")
    assert "ctx-91f2" not in launch and "launch=…" in launch and "iss=https" in launch
    callback = _line("/smart/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=gAAAAABn9x")
    assert "SplxlOBe" not in callback and "gAAAA" not in callback
    assert '"GET /smart/callback?code=…&state=… HTTP/1.1"' in callback
    page = _line("/smart/timeline?session_token=gAAAAABpage&x=1")
    assert "gAAAAABpage" not in page and "session_token=…&x=1" in page
    staff = _line("/dashboard/sign-in/smart/callback?state=abc&code=def&error=access_denied")
    assert "abc" not in staff and "def" not in staff and "error=access_denied" in staff
