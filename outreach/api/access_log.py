"""The access log without credentials: a preference or offer link's token is the patient's key,
so the paths `/p/<token>` and `/o/<token>` are logged as `/p/…` and `/o/…`; and the values of
the query parameters that carry a SMART launch (`launch`, `code`, `state`, the page's
`session_token`, and a client assertion) are logged as `…`, on any path."""

from __future__ import annotations

import logging
import re

_PATIENT_LINK = re.compile(r"/([po])/[^/?\s\"]+")
SECRET_PARAMS = ("launch", "code", "state", "session_token", "client_assertion",
                 "access_token", "id_token")
# A name=value pair in a query string: after ? or &, up to the next &, # or the line's end.
_SECRET_VALUE = re.compile(
    r"([?&](?:" + "|".join(map(re.escape, SECRET_PARAMS)) + r")=)[^&#\s\"]*", re.IGNORECASE)


def masked(path: str) -> str:
    """A request path fit for a log line: a patient link's token, and the values of the SMART
    launch's query parameters, replaced by `…`."""
    return _SECRET_VALUE.sub(r"\1…", _PATIENT_LINK.sub(r"/\1/…", path))


class RedactPatientLinks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(masked(a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str):
            record.msg = masked(record.msg)
        return True


def install() -> None:
    """On uvicorn's access logger, once."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactPatientLinks) for f in logger.filters):
        logger.addFilter(RedactPatientLinks())
