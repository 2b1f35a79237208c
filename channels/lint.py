"""Template lint: SMS length in segments, the opt-out line, and the minimum-necessary rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from channels.segments import sms_segments

# What an outreach message may say about a visit ("minimum necessary"): never a
# reason, diagnosis, service or visit type, in any channel.
# `preferences_url` is the patient's own signed link to their message preferences.
ALLOWED_FIELDS = frozenset({"first_name", "when", "place", "organization", "callback_phone",
                            "preferences_url"})
MAX_SMS_SEGMENTS = 3
_SAMPLE = {"first_name": "Maximiliana", "when": "Wednesday 30 September at 10:30",
           "place": "Main Street Clinic, 2nd floor", "organization": "St Example Hospital",
           "callback_phone": "+1 555 555 0100",
           "preferences_url": "https://outreach.example-hospital.org/p/"
                              "YWJjZGVmMDEtMjM0NS02Nzg5LWFiY2QtZWYwMTIzNDU2Nzg5fGVzfDZiMzdmYzIx"
                              ".kcLZMF2NjBtRUKOLXNr6vw"}



@dataclass(frozen=True, slots=True)
class TemplateProblem:
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


def _positions(text: str) -> dict[str, tuple[int, int]]:
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return {}
    return {k.value: (k.start_mark.line + 1, k.start_mark.column + 1) for k, _ in root.value}


def lint_template_file(path: Path, max_segments: int = MAX_SMS_SEGMENTS) -> list[TemplateProblem]:
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
        where = _positions(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return [TemplateProblem(str(path), line, col, f"YAML: {exc.problem}")]
    env = SandboxedEnvironment()
    problems = []

    def problem(field: str, message: str) -> None:
        problems.append(TemplateProblem(str(path), *where.get(field, (1, 1)), message))

    for field, source in data.items():
        used = meta.find_undeclared_variables(env.parse(str(source)))
        for name in sorted(used - ALLOWED_FIELDS):
            problem(field, f"{field} uses {name!r}: messages carry only "
                           f"{', '.join(sorted(ALLOWED_FIELDS))} (minimum necessary)")
    sms = data.get("sms")
    if path.stem.startswith("_"):
        return problems  # a partial (the email footer) has no text message of its own
    if sms is None:
        problem("sms", "no sms text")
        return problems
    rendered = env.from_string(str(sms)).render(_SAMPLE).strip()
    if "STOP" not in rendered:
        problem("sms", "sms text must tell the patient how to opt out (\"Reply STOP ...\")")
    segments = sms_segments(rendered)
    if segments > max_segments:
        problem("sms", f"sms text is {segments} segments with long values (max {max_segments})")
    return problems


def lint_templates(root: Path, max_segments: int = MAX_SMS_SEGMENTS) -> list[TemplateProblem]:
    return [p for file in sorted(root.glob("*/*.yaml"))
            for p in lint_template_file(file, max_segments)]
