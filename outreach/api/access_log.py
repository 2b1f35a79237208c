"""The access log without the patient's key: a preference link's token is a credential, so the
path `/p/<token>` is logged as `/p/…`."""

from __future__ import annotations

import logging
import re

_PATIENT_LINK = re.compile(r"/p/[^/?\s\"]+")


class RedactPatientLinks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_PATIENT_LINK.sub("/p/…", a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _PATIENT_LINK.sub("/p/…", record.msg)
        return True


def install() -> None:
    """On uvicorn's access logger, once."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactPatientLinks) for f in logger.filters):
        logger.addFilter(RedactPatientLinks())
