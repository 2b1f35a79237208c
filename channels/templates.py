"""Message templates: one YAML file per template and language, rendered in a Jinja2 sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment

SHIPPED = Path(__file__).parent / "templates"
DEFAULT_LANGUAGE = "en"
FOOTER = "_footer"  # appended to every email in its language (the preference link)
_FIELDS = {"sms", "email_subject", "email_text", "email_html"}


class TemplateError(Exception):
    """A template that is missing, malformed, or refers to a value that is not there."""


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    text: str
    subject: str | None = None
    html: str | None = None


class TemplateCatalog:
    """Templates under `root/{language}/{name}.yaml`; unknown languages fall back to English."""

    def __init__(self, root: Path = SHIPPED) -> None:
        self._texts: dict[tuple[str, str], dict[str, str]] = {}
        for file in sorted(root.glob("*/*.yaml")):
            try:
                data = yaml.safe_load(file.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
                problem = getattr(exc, "problem", None) or "not valid YAML"
                raise TemplateError(f"{where}: {problem} (quote a text that holds ': ')") from exc
            if not isinstance(data, dict) or not set(data) <= _FIELDS:
                raise TemplateError(f"{file}: expected a mapping with keys from {sorted(_FIELDS)}")
            self._texts[(file.stem, file.parent.name)] = {k: str(v) for k, v in data.items()}
        self._plain = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._html = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        self._cache: dict[tuple[int, str], Template] = {}

    def _compiled(self, env: SandboxedEnvironment, source: str) -> Template:
        # Compiling is most of the cost of rendering: once per text and environment.
        key = (id(env), source)
        template = self._cache.get(key)
        if template is None:
            template = self._cache[key] = env.from_string(source)
        return template

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self._texts if not name.startswith("_")}

    def language_of(self, name: str, language: str | None) -> str | None:
        """The language a message in `language` is actually written in (English when the
        template has no such translation); None when there is no such template."""
        for lang in (language, DEFAULT_LANGUAGE):
            if lang and (name, lang) in self._texts:
                return lang
        return None

    def _source(self, name: str, language: str | None) -> dict[str, str]:
        lang = self.language_of(name, language)
        if lang is None:
            raise TemplateError(f"no template {name!r}")
        return self._texts[(name, lang)]

    def render(
        self, name: str, channel: str, context: Mapping[str, Any], language: str | None = None
    ) -> RenderedMessage:
        source = self._source(name, language)

        def plain(field: str) -> str:
            return self._compiled(self._plain, source[field]).render(context).strip()

        try:
            if channel != "email":
                return RenderedMessage(text=plain("sms"))
            html = source.get("email_html")
            text = plain("email_text")
            rendered_html = self._compiled(self._html, html).render(context) if html else None
            footer = self._footer(language, context)
            if footer is not None:
                text = f"{text}\n\n{footer.text}" if footer.text else text
                if rendered_html is not None and footer.html:
                    rendered_html = f"{rendered_html}\n{footer.html}"
            return RenderedMessage(text=text, subject=plain("email_subject"), html=rendered_html)
        except KeyError as exc:
            raise TemplateError(f"template {name!r} has no {exc.args[0]} text") from exc
        except JinjaTemplateError as exc:
            raise TemplateError(f"template {name!r} ({channel}): {exc}") from exc

    def _footer(self, language: str | None, context: Mapping[str, Any]) -> RenderedMessage | None:
        try:
            source = self._source(FOOTER, language)
        except TemplateError:
            return None  # a catalog without a footer sends emails without one
        try:
            text = self._compiled(self._plain, source.get("email_text", "")).render(context)
            html = self._compiled(self._html, source.get("email_html", "")).render(context)
        except JinjaTemplateError as exc:
            raise TemplateError(f"template {FOOTER!r}: {exc}") from exc
        return RenderedMessage(text=text.strip(), html=html.strip() or None)
