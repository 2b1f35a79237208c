"""Template lint: the opt-out line, the minimum-necessary fields, SMS length in segments."""

from __future__ import annotations

from pathlib import Path

from channels.lint import lint_template_file, lint_templates
from channels.segments import sms_segments
from channels.templates import SHIPPED


def test_shipped_templates_pass() -> None:
    assert lint_templates(SHIPPED) == []


def _lint(tmp_path: Path, text: str) -> list[str]:
    file = tmp_path / "en" / "t.yaml"
    file.parent.mkdir(exist_ok=True)
    file.write_text(text)
    return [str(p) for p in lint_template_file(file)]


def test_missing_opt_out_line_is_reported_at_the_sms_key(tmp_path: Path) -> None:
    (problem,) = _lint(tmp_path, "email_subject: Hi\nsms: Hi {{ first_name }}\n")
    assert problem.endswith(":2:1: sms text must tell the patient how to opt out "
                            "(\"Reply STOP ...\")")


def test_clinical_fields_are_refused(tmp_path: Path) -> None:
    problems = _lint(tmp_path, "sms: Your {{ reason }} visit. Reply STOP to opt out.\n"
                               "email_text: About your {{ diagnosis }}\n")
    assert any("sms uses 'reason'" in p for p in problems)
    assert any(":2:1: email_text uses 'diagnosis'" in p for p in problems)


def test_long_sms_is_reported(tmp_path: Path) -> None:
    (problem,) = _lint(tmp_path, "sms: " + "word " * 120 + "Reply STOP to opt out.\n")
    assert "segments" in problem


def test_segments_follow_gsm7_and_ucs2_limits() -> None:
    assert sms_segments("a" * 160) == 1 and sms_segments("a" * 161) == 2
    assert sms_segments("a" * 306) == 2 and sms_segments("a" * 307) == 3
    assert sms_segments("€" * 80) == 1  # extension character counts double: 160
    assert sms_segments("á" * 70) == 1 and sms_segments("á" * 71) == 2  # UCS-2
