"""HL7 v2 SIU/ADT messages as an interface engine would send them (segments joined by CR)."""

from __future__ import annotations

from datetime import datetime


def ts(when: datetime) -> str:
    """An HL7 TS with its UTC offset."""
    return when.strftime("%Y%m%d%H%M%S%z")


def msh(event: str, control_id: str, sent: datetime, message_type: str = "SIU") -> str:
    return (f"MSH|^~\\&|SCHED|MAINHOSP|OUTREACH|MAINHOSP|{ts(sent)}||"
            f"{message_type}^{event}^{message_type}_{event}|{control_id}|P|2.5.1")


PID = ("PID|1||MRN123^^^MAINHOSP^MR~999-99-9999^^^SSA^SS||Doe^Jane^Q||19800214|F|||"
       "1 Main St^^Springfield^IL^62701||^PRN^CP^^1^555^5550123~^NET^Internet^jane@example.org"
       "||es^Spanish^ISO639")


def siu(event: str, control_id: str, sent: datetime, start: datetime, *,
        appointment_id: str = "A1000", minutes: int = 30, pid: str | None = PID,
        filler_status: str = "Booked") -> str:
    segments = [
        msh(event, control_id, sent),
        f"SCH|P{appointment_id}^EPIC|{appointment_id}^SCHED|||||ROUTINE^Routine|FOLLOWUP|"
        f"{minutes}|MIN|^^{minutes}^{ts(start)}" + "|" * 14 + filler_status,
    ]
    if pid is not None:
        segments.append(pid)
    segments += [
        "RGS|1",
        f"AIS|1||OFFICE^Office visit|{ts(start)}|||{minutes}|MIN",
        f"AIL|1||CLINIC1^^^MAINST^^^^^Main Street Clinic|||{ts(start)}|||{minutes}|MIN",
        f"AIP|1||1234^Smith^Anna^^^Dr|||{ts(start)}|||{minutes}|MIN",
    ]
    return "\r".join(segments)


def adt(event: str, control_id: str, sent: datetime, *, visit: str | None = "V555",
        discharged: datetime | None = None) -> str:
    segments = [msh(event, control_id, sent, "ADT"), f"EVN|{event}|{ts(sent)}", PID]
    pv1 = f"PV1|1|O|CLINIC1^^^MAINST||||||||||||||||{visit or ''}"
    if discharged is not None:
        pv1 += "|" * (45 - 19) + ts(discharged)
    segments.append(pv1)
    return "\r".join(segments)
