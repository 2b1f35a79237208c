"""One exception hierarchy for FHIR errors, each carrying the OperationOutcome when there is one.

    FhirError
     ├── InvalidResource          a payload that is not valid R4 (ours to reject: 400)
     ├── FhirNotFound             404 / 410 from the server
     ├── FhirConflict             409
     │    ├── SlotTaken           the Slot is no longer free (taken, or changed in the EHR)
     │    └── AppointmentChanged  the Appointment is not the version or status offered on
     ├── FhirPreconditionFailed   412 (If-Match lost a race)
     ├── FhirUnsupported          the EHR's CapabilityStatement says it cannot do what we need
     ├── FhirAuthError            the EHR's token endpoint refused our credentials
     └── FhirUnavailable          network failure, 429 or 5xx: try again later
"""

from __future__ import annotations

from typing import Any


def operation_outcome(
    diagnostics: str, *, code: str = "invalid", severity: str = "error",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class FhirError(Exception):
    def __init__(
        self, message: str, *, status: int | None = None, outcome: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome or operation_outcome(message, code="exception")


class InvalidResource(FhirError):
    def __init__(self, message: str, issues: list[dict[str, Any]] | None = None) -> None:
        outcome = {"resourceType": "OperationOutcome",
                   "issue": issues or operation_outcome(message)["issue"]}
        super().__init__(message, status=400, outcome=outcome)


class FhirNotFound(FhirError):
    pass


class FhirConflict(FhirError):
    pass


class SlotTaken(FhirConflict):
    """Booking lost: the Slot is busy, gone or moved. Offer the patient the next options."""


class AppointmentChanged(FhirConflict):
    """The Appointment changed in the EHR since the offer (another version, or a status we may
    not move, such as cancelled): nothing was booked, and the Slot we took was freed again."""


class FhirPreconditionFailed(FhirError):
    pass


class FhirUnsupported(FhirError):
    pass


class FhirAuthError(FhirError):
    pass


class FhirUnavailable(FhirError):
    def __init__(self, message: str, *, status: int | None = None,
                 outcome: dict[str, Any] | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, outcome=outcome)
        self.retry_after = retry_after
