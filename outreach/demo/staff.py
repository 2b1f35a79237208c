"""A clinician answering from the SMART view, as the demo plays it: the page's own actions
(send_reply, complete_task) for a signed-in Practitioner, without a browser or an EHR login."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from outreach.core.ports import Runtime
from outreach.staff.smart.session import SmartSession
from outreach.staff.smart.staff_actions import complete_task, send_reply
from outreach.staff.smart.timeline import STAFF_PREFIX, load_timeline


def _uid(number: int) -> str:
    return f"demo-staff-reply-{number:04d}"


def message_key(number: int) -> str:
    """The key the console channel printed the staff member's SMS under."""
    return f"{STAFF_PREFIX}{_uid(number)}"


def load_actions(folder: Path) -> list[dict[str, Any]]:
    """What staff do from the clinician view (answer, close the patient's open Tasks), if any."""
    file = folder / "staff" / "actions.json"
    if not file.exists():
        return []
    return list(json.loads(file.read_text("utf-8")))


def act(rt: Runtime, action: dict[str, Any], at: datetime, number: int) -> list[str]:
    """Carry out one staff action; the lines that say what happened."""
    session = SmartSession(str(action["patient"]), "demo", "demo-access-token",
                           at + timedelta(hours=1), fhir_user=str(action["staff"]))
    lines = []
    if action.get("reply"):
        outcome = send_reply(rt, session, _uid(number), action["reply"])
        lines.append(f"answered: {outcome.message} (written back as a Communication from "
                     f"{session.fhir_user}, audited)")
    if action.get("close_task"):
        with rt.sessions() as db:
            tasks = load_timeline(db, rt.journeys, session.patient).tasks
        for task in tasks:
            complete_task(rt, session, task.identifier)
            lines.append(f"marked done: {task.description} (Task updated in the EHR, audited)")
    return lines
