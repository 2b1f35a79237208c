"""Staff in the clinician view, through our API under uvicorn, against the real FHIR server the
launch's `iss` serves to the signed-in user: the banner and visit details read with the user's
token (and what the page says when the EHR cannot answer), replies to the patient (CSRF,
consent, written back naming the Practitioner, audited without their text), Tasks closed here
or in the EHR."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from outreach.core.ports import Runtime
from outreach.store.models import AuditEntry, StaffMessage
from tests.outreach.staff.smart.conftest import DOCTOR, MOBILE, run_outreach
from tests.support.api_server import ApiServer
from tests.support.drain import drain
from tests.support.smart_auth_server import SmartAuthServer, ehr_sign_in
from tests.support.twilio_server import TwilioServer

REPLY = "Yes, of course: please bring her along."


def _open(rt: Runtime, api: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
          client: httpx.Client, *, stop: bool = False) -> tuple[str, str]:
    """The outreach made, the view launched from the patient's chart: (patient id, page)."""
    patient_id = run_outreach(rt, api, twilio, stop=stop)
    auth.register_launch("xyz", patient_id)
    assert ehr_sign_in(client, auth).status_code == 303
    page = client.get("/smart/timeline")
    assert page.status_code == 200, page.text
    return patient_id, page.text


def _field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found is not None, name
    return html.unescape(found[1])


def _reply(client: httpx.Client, page: str, text: str = REPLY, **changes: str
           ) -> httpx.Response:
    form = {"csrf": _field(page, "csrf"), "uid": _field(page, "uid"), "session_token": "",
            "text": text, **changes}
    return client.post("/smart/reply", data=form)


def _communications(rt: Runtime, patient_id: str) -> list[dict[str, object]]:
    assert rt.ehr is not None
    return [c for c in rt.ehr.search("Communication", {"subject": f"Patient/{patient_id}"})
            if str(c["identifier"][0]["value"]).startswith("staff-")]  # type: ignore[index]


def test_the_banner_and_visit_come_from_the_ehr_read_with_the_users_token(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client)
    text = html.unescape(page)
    assert "Maria Example" in text and "DOB</abbr> 12 Mar 1961" in text and "Female" in text
    assert "Follow-up visit" in text and "Main Street Clinic" in text
    assert "Dr Dana Whitfield" in text  # named by reference only: read as the user
    assert " EST" in text and " UTC" not in text  # the clinic's zone (America/New_York)
    reads = auth.state.fhir_requests
    assert {r["path"].split("/")[1] for r in reads} >= {"Patient", "Appointment",
                                                        "Practitioner"}
    assert all(r["authorized"] for r in reads)  # every read carried the user's token
    assert f"/Patient/{patient_id}" in [r["path"] for r in reads]


def test_no_banner_when_the_ehr_shows_its_own_and_the_patient_is_not_read(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    auth.state.need_patient_banner = False
    _, page = _open(ehr_rt, api_server, twilio, auth, client)
    assert 'aria-label="Patient"' not in page and "Maria Example" not in page
    assert not any(r["path"].startswith("/Patient/") for r in auth.state.fhir_requests)
    assert "Follow-up visit" in page  # the visit details still are


def test_an_ehr_that_cannot_answer_leaves_ids_and_says_so(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    auth.state.fhir_failure = 503
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client)
    text = html.unescape(page)
    assert f"Patient/{patient_id}" in text
    assert "Name and birth date unavailable from the EHR" in text
    assert "Visit details unavailable from the EHR" in text
    assert "Not available from the EHR just now: patient details, some appointment details, " \
        "task status in the EHR." in text
    assert "Can I bring my daughter?" in text  # our own record is all there


def test_a_staff_reply_is_sent_written_back_naming_the_practitioner_and_audited(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client)
    ehr_rt.clock.set(ehr_rt.clock.now() + timedelta(minutes=5))  # type: ignore[attr-defined]
    answer = _reply(client, page)
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/smart/timeline?notice=sent")
    assert (twilio.messages[-1]["to"], twilio.messages[-1]["body"]) == (MOBILE, REPLY)
    again = _reply(client, page)  # the same form once more (a double click)
    assert again.headers["location"].endswith("?notice=duplicate")
    assert [m["body"] for m in twilio.messages].count(REPLY) == 1

    drain(ehr_rt)  # the worker writes the Communication back
    (written,) = _communications(ehr_rt, patient_id)
    assert written["sender"] == {"reference": DOCTOR} and written["status"] == "completed"
    assert written["payload"] == [{"contentString": REPLY}]
    with ehr_rt.sessions() as session:
        (audit,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "smart.reply"))
    assert (audit.actor, audit.target) == (DOCTOR, f"Patient/{patient_id}")
    assert REPLY not in str(audit.detail) and MOBILE not in str(audit.detail)

    shown = html.unescape(client.get(answer.headers["location"]).text)
    assert "Sent by SMS." in shown
    thread = shown[shown.index('id="conversation"'):]
    assert thread.index("Can I bring my daughter?") < thread.index(REPLY)


def test_an_opted_out_patient_is_not_texted_and_the_reply_is_recorded_as_not_sent(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client, stop=True)
    sent_before = len(twilio.messages)
    answer = _reply(client, page)
    assert answer.headers["location"].endswith("?notice=opted-out")
    assert len(twilio.messages) == sent_before
    drain(ehr_rt)
    (written,) = _communications(ehr_rt, patient_id)
    assert written["status"] == "not-done"
    assert written["statusReason"] == {"text": "the patient has opted out of SMS"}
    shown = html.unescape(client.get(answer.headers["location"]).text)
    assert "Recorded, not sent: the patient has opted out of SMS." in shown
    assert "Not sent: the patient has opted out of SMS" in shown  # in the thread


@pytest.mark.parametrize("forged", [
    {"csrf": ""},
    {"csrf": "A" * 43},
])
def test_a_reply_without_this_sessions_csrf_token_does_nothing(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client, forged: dict[str, str],
) -> None:
    _, page = _open(ehr_rt, api_server, twilio, auth, client)
    sent_before = len(twilio.messages)
    refused = _reply(client, page, **forged)
    assert refused.status_code == 403 and "did not come from your outreach page" in refused.text
    task = _field(page, "task")
    assert client.post("/smart/tasks/done", data={**forged, "task": task}).status_code == 403
    assert len(twilio.messages) == sent_before
    with ehr_rt.sessions() as session:
        assert session.scalars(select(StaffMessage)).all() == []
        assert session.scalars(select(AuditEntry)).all() == []


def test_a_reply_with_no_session_is_401_and_bad_text_is_a_400_page(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    _, page = _open(ehr_rt, api_server, twilio, auth, client)
    for text, said in (("   ", "Write a message first."),
                       ("x" * 1001, "at most 1000 characters")):
        bad = _reply(client, page, text=text)
        assert bad.status_code == 400 and said in bad.text
    assert _reply(client, page, uid="../../x").status_code == 400
    with httpx.Client(base_url=api_server.url) as stranger:
        assert stranger.post("/smart/reply", data={"text": "hi"}).status_code == 401


def test_mark_done_completes_the_task_in_the_ehr_and_only_this_patients(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client)
    form = {"csrf": _field(page, "csrf"), "session_token": ""}
    other = client.post("/smart/tasks/done", data={**form, "task": "urn:x|task-someone-else"})
    assert other.status_code == 400 and "No such task for this patient." in other.text
    nul = client.post("/smart/tasks/done", data={**form, "task": "urn:x|task-\x00"})
    assert nul.status_code == 400 and "No such task for this patient." in nul.text
    done = client.post("/smart/tasks/done", data={**form, "task": _field(page, "task")})
    assert done.headers["location"].endswith("?notice=done")
    drain(ehr_rt)
    assert ehr_rt.ehr is not None
    (task,) = ehr_rt.ehr.search("Task", {"patient": f"Patient/{patient_id}"})
    assert task["status"] == "completed"
    shown = client.get("/smart/timeline").text
    assert "Open tasks for staff (0)" in shown and "Done (1)" in shown
    with ehr_rt.sessions() as session:
        (audit,) = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "smart.task-done"))
    assert audit.actor == DOCTOR


def test_a_task_completed_in_the_ehr_shows_as_done(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client)
    assert "Open tasks for staff (1)" in page
    assert ehr_rt.ehr is not None
    (task,) = ehr_rt.ehr.search("Task", {"patient": f"Patient/{patient_id}"})
    ehr_rt.ehr.update({**task, "status": "completed"})  # a nurse closed it in the EHR
    shown = client.get("/smart/timeline").text
    assert "Open tasks for staff (0)" in shown and "Done (1)" in shown


def test_a_user_who_is_not_a_practitioner_may_answer_but_is_not_named_sender(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    auth.state.user = "PractitionerRole/desk-1"
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client)
    assert "signed in as a PractitionerRole, not a Practitioner" in page
    assert _reply(client, page).headers["location"].endswith("?notice=sent")
    drain(ehr_rt)
    (written,) = _communications(ehr_rt, patient_id)
    assert "sender" not in written
    with ehr_rt.sessions() as session:
        (audit,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "smart.reply"))
    assert audit.actor == "PractitionerRole/desk-1"


def test_an_id_token_that_does_not_verify_names_nobody(
    ehr_rt: Runtime, api_server: ApiServer, twilio: TwilioServer, auth: SmartAuthServer,
    client: httpx.Client,
) -> None:
    auth.state.stranger_key = True  # signed with a key the EHR does not publish
    patient_id, page = _open(ehr_rt, api_server, twilio, auth, client)
    assert "the EHR did not say who is signed in" in page  # the view still opens
    assert _reply(client, page).headers["location"].endswith("?notice=sent")
    drain(ehr_rt)
    (written,) = _communications(ehr_rt, patient_id)
    assert "sender" not in written
    with ehr_rt.sessions() as session:
        (audit,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "smart.reply"))
    assert audit.actor == "unknown"
