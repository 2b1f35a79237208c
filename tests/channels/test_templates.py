"""Message templates: shipped texts, language fallback, strictness, escaping, minimum necessary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import Environment, meta

from channels.templates import SHIPPED, TemplateCatalog, TemplateError

ALLOWED_KEYS = {"first_name", "when", "place", "organization", "callback_phone", "preferences_url"}
SHIPPED_FILES = sorted(f for f in SHIPPED.glob("*/*.yaml") if not f.stem.startswith("_"))
CONTEXT: dict[str, Any] = {
    "first_name": "Ana",
    "when": "Friday 27 November at 10:30",
    "place": "Main Street Clinic",
    "organization": "St. Example",
    "callback_phone": "+1 555 0100",
}


@pytest.fixture(scope="module")
def catalog() -> TemplateCatalog:
    return TemplateCatalog()


def file_id(file: Path) -> str:
    return f"{file.parent.name}/{file.stem}"


def test_shipped_catalog_has_the_templates_the_journey_uses(catalog: TemplateCatalog) -> None:
    assert {"appointment-booked", "appointment-reminder"} <= catalog.names
    assert {f.parent.name for f in SHIPPED_FILES} == {"en", "es"}


@pytest.mark.parametrize("file", SHIPPED_FILES, ids=file_id)
def test_shipped_templates_render_for_sms_and_email(catalog: TemplateCatalog, file: Path) -> None:
    name, language = file.stem, file.parent.name

    sms = catalog.render(name, "sms", CONTEXT, language)
    email = catalog.render(name, "email", CONTEXT, language)

    # Greetings, recalls and surveys are not about a time: only templates that name one must.
    timed = "{{ when }}" in file.read_text(encoding="utf-8")
    for rendered in (sms.text, email.text):
        assert "Ana" in rendered
        assert not timed or "Friday 27 November at 10:30" in rendered
    assert sms.subject is None and sms.html is None
    assert email.subject
    assert not timed or "Friday 27 November at 10:30" in email.subject
    assert "{{" not in sms.text + email.text + email.subject


def test_spanish_and_english_texts_differ(catalog: TemplateCatalog) -> None:
    en = catalog.render("appointment-reminder", "sms", CONTEXT, "en")
    es = catalog.render("appointment-reminder", "sms", CONTEXT, "es")

    assert en.text.startswith("Reminder:")
    assert es.text.startswith("Recordatorio:")


def test_english_email_has_an_html_part(catalog: TemplateCatalog) -> None:
    email = catalog.render("appointment-booked", "email", CONTEXT, "en")

    assert email.html is not None
    assert "<strong>Friday 27 November at 10:30</strong>" in email.html


@pytest.mark.parametrize("language", ["fr", "", None, "zz-ZZ"])
def test_unknown_language_falls_back_to_english(
    catalog: TemplateCatalog, language: str | None
) -> None:
    fallback = catalog.render("appointment-booked", "email", CONTEXT, language)

    assert fallback == catalog.render("appointment-booked", "email", CONTEXT, "en")


def test_optional_values_may_be_empty(catalog: TemplateCatalog) -> None:
    bare = {**CONTEXT, "place": None, "organization": None, "callback_phone": None}

    text = catalog.render("appointment-booked", "sms", bare, "en").text

    assert text == "Hi Ana, your appointment is booked for Friday 27 November at 10:30. " \
        "Reply STOP to opt out."


def test_unknown_template_is_a_template_error(catalog: TemplateCatalog) -> None:
    with pytest.raises(TemplateError, match="no template 'nope'"):
        catalog.render("nope", "sms", CONTEXT)


def write_template(root: Path, language: str, name: str, fields: dict[str, str]) -> None:
    (root / language).mkdir(parents=True, exist_ok=True)
    (root / language / f"{name}.yaml").write_text(yaml.safe_dump(fields), encoding="utf-8")


def test_an_undefined_variable_is_an_error_not_an_empty_string(tmp_path: Path) -> None:
    write_template(tmp_path, "en", "greeting", {
        "sms": "Hi {{ nickname }}", "email_subject": "Hi", "email_text": "Hi {{ nickname }}",
    })
    catalog = TemplateCatalog(tmp_path)

    for channel in ("sms", "email"):
        with pytest.raises(TemplateError, match="nickname"):
            catalog.render("greeting", channel, CONTEXT)
    assert catalog.render("greeting", "sms", {"nickname": "Bo"}).text == "Hi Bo"


def test_a_template_without_text_for_a_channel_is_an_error(tmp_path: Path) -> None:
    write_template(tmp_path, "en", "sms-only", {"sms": "Hi {{ first_name }}"})

    with pytest.raises(TemplateError, match="email_text"):
        TemplateCatalog(tmp_path).render("sms-only", "email", CONTEXT)


def test_a_template_file_with_unknown_fields_is_rejected(tmp_path: Path) -> None:
    write_template(tmp_path, "en", "typo", {"smss": "Hi"})

    with pytest.raises(TemplateError, match=r"typo\.yaml"):
        TemplateCatalog(tmp_path)


def test_html_is_autoescaped_and_text_is_not(catalog: TemplateCatalog) -> None:
    context = {**CONTEXT, "first_name": "<b>x</b>"}

    email = catalog.render("appointment-booked", "email", context, "en")

    assert email.html is not None
    assert "&lt;b&gt;x&lt;/b&gt;" in email.html
    assert "<b>x</b>" not in email.html
    assert "<b>x</b>" in email.text
    assert "<b>x</b>" in catalog.render("appointment-booked", "sms", context, "en").text


@pytest.mark.parametrize("file", SHIPPED_FILES, ids=file_id)
def test_every_sms_tells_the_patient_how_to_opt_out(catalog: TemplateCatalog, file: Path) -> None:
    bare = {**CONTEXT, "place": None, "organization": None, "callback_phone": None}

    for context in (CONTEXT, bare):
        assert "STOP" in catalog.render(file.stem, "sms", context, file.parent.name).text


@pytest.mark.parametrize("file", SHIPPED_FILES, ids=file_id)
def test_templates_use_only_the_minimum_necessary_values(file: Path) -> None:
    """No reason, diagnosis or visit type can reach a message if no template can name one."""
    fields = yaml.safe_load(file.read_text(encoding="utf-8"))
    env = Environment()

    used = set().union(*(meta.find_undeclared_variables(env.parse(src)) for src in fields.values()))

    assert used <= ALLOWED_KEYS, used - ALLOWED_KEYS
    assert "first_name" in used
