"""The access log without the patient's key: a preference or offer link's token is a credential,
so the paths `/p/<token>` and `/o/<token>` are logged as `/p/…` and `/o/…`."""

from __future__ import annotations

import logging
import re

_PATIENT_LINK = re.compile(r"/([po])/[^/?\s\"]+")


def masked(path: str) -> str:
    """A request path fit for a log line: a patient link's token replaced by `…`."""
    return _PATIENT_LINK.sub(r"/\1/…", path)


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
