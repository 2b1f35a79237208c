"""The clinician view's page data: our timeline for the session's patient, with what the EHR
says now (banner, appointment details, Tasks completed there), read as the signed-in user."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from outreach.core.ports import Runtime
from outreach.staff.smart.ehr_context import EhrContext, read_context
from outreach.staff.smart.session import SmartSession
from outreach.staff.smart.timeline import Timeline, load_timeline


@dataclass(frozen=True)
class TimelineView:
    timeline: Timeline
    ehr: EhrContext
    banner: bool  # show the patient banner (the EHR asked for one)


async def timeline_view(rt: Runtime, session: SmartSession) -> TimelineView:
    def query() -> Timeline:
        with rt.sessions() as db:
            return load_timeline(db, rt.journeys, session.patient)

    timeline = await asyncio.to_thread(query)
    # Only Tasks the EHR has been given can have changed there.
    ehr = await read_context(session, timeline.appointments,
                             [t.identifier for t in timeline.tasks if t.in_ehr],
                             with_banner=session.need_patient_banner,
                             people=tuple(m.sender for m in timeline.conversation
                                          if m.who == "staff" and m.sender))
    return TimelineView(timeline.with_ehr_status(ehr.task_status), ehr,
                        session.need_patient_banner)
