"""The EHR's scheduler: IHE `$find`/`$book` where its CapabilityStatement advertises them,
Slots searched and updated with If-Match otherwise."""

from __future__ import annotations

from connector.capabilities import Capabilities, capabilities
from connector.errors import FhirError
from connector.scheduling import Scheduler
from outreach.core.ports import Runtime


def scheduler(rt: Runtime) -> Scheduler:
    assert rt.ehr is not None, "offers are only made with an EHR"
    caps: Capabilities | None
    try:
        caps = capabilities(rt.ehr)
    except FhirError:  # not readable now: the plain Slot path works on any R4 server
        caps = None
    return Scheduler(rt.ehr, caps)
