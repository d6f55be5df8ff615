"""Server-rendered public pages: Jinja2, translatable, overridable per tenant.

Default templates live in ``web/templates/public/``. A tenant overrides any of
them by storing its own source under ``settings.public_templates`` (a JSON
object of template name to source) on its tenant row. Pages with overrides
run in the campaign renderer's sandbox (``TemplateSandbox``) under its time
budget, with output capped at ``MAX_PAGE``; an override that fails, takes too
long or grows too large shows the default page instead.
Strings are marked with ``{% trans %}``/``_()``; catalogues are read from
``web/locale/<lang>/LC_MESSAGES/swiftmail.mo`` when present (English is the
source language, so a missing catalogue shows English).
"""

from __future__ import annotations

import functools
import gettext
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import structlog

from swiftmail_core.rendering.sandbox import RenderLimits, TemplateSandbox

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "public"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
OVERRIDE_KEY = "public_templates"
OVERRIDE_LIMIT = 64 * 1024
#: A rendered page larger than this falls back to the default template.
MAX_PAGE = 512 * 1024
#: A tenant's page gets the time budget of a campaign render.
PAGE_LIMITS = RenderLimits(max_output_chars=MAX_PAGE)
log = structlog.get_logger("swiftmail.pages")


def _environment(overrides: tuple[tuple[str, str], ...]) -> TemplateSandbox:
    loaders: list[jinja2.BaseLoader] = []
    if overrides:
        loaders.append(jinja2.DictLoader(dict(overrides)))
    loaders.append(jinja2.FileSystemLoader(str(TEMPLATE_DIR)))
    environment = TemplateSandbox(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return environment


@functools.lru_cache(maxsize=256)
def _cached_environment(key: str, overrides: tuple[tuple[str, str], ...]) -> TemplateSandbox:
    return _environment(overrides)


def environment_for(tenant_settings: Mapping[str, Any] | None) -> TemplateSandbox:
    """Return the template environment with the tenant's overrides, if any."""
    raw = (tenant_settings or {}).get(OVERRIDE_KEY) or {}
    overrides = tuple(sorted(
        (str(name), str(source)[:OVERRIDE_LIMIT])
        for name, source in raw.items()
        if isinstance(name, str) and name.endswith(".html") and "/" not in name
    )) if isinstance(raw, Mapping) else ()
    key = hashlib.sha256(json.dumps(overrides).encode()).hexdigest()
    return _cached_environment(key, overrides)


@functools.lru_cache(maxsize=32)
def translations(language: str) -> gettext.NullTranslations:
    """Return the catalogue for ``language`` (English source text when missing)."""
    return gettext.translation(
        "swiftmail", localedir=str(LOCALE_DIR), languages=[language or "en"], fallback=True
    )


def _newstyle(catalogue: gettext.NullTranslations) -> tuple[Any, Any]:
    """Return gettext/ngettext that escape and format like Jinja2's newstyle."""

    @jinja2.pass_context
    def _gettext(context: Any, text: str, **variables: Any) -> str:
        translated = catalogue.gettext(text)
        if context.eval_ctx.autoescape:
            translated = markupsafe.Markup(translated)  # noqa: S704 - our catalogue; % escapes values
        return translated % variables if variables else translated

    @jinja2.pass_context
    def _ngettext(context: Any, singular: str, plural: str, num: int, **variables: Any) -> str:
        variables.setdefault("num", num)
        translated = catalogue.ngettext(singular, plural, num)
        if context.eval_ctx.autoescape:
            translated = markupsafe.Markup(translated)  # noqa: S704 - our catalogue; % escapes values
        return translated % variables

    return _gettext, _ngettext


def validate_overrides(raw: Any) -> None:
    """Check a tenant's ``public_templates`` when it is saved; raise naming the bad one."""
    from swiftmail_core.errors import ValidationError

    field = f"settings.{OVERRIDE_KEY}"
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        raise ValidationError.for_field(field, "must be an object of template name to source")
    defaults = {path.name for path in TEMPLATE_DIR.glob("*.html")}
    for name, source in raw.items():
        where = f"{field}.{name}"
        if name not in defaults:
            raise ValidationError.for_field(
                where, f"is not a page template; overridable: {', '.join(sorted(defaults))}")
        if not isinstance(source, str) or len(source) > OVERRIDE_LIMIT:
            raise ValidationError.for_field(where, f"must be text of at most {OVERRIDE_LIMIT} "
                                                   "characters")
        try:
            _environment(((name, source),)).parse(source)
        except jinja2.TemplateSyntaxError as ex:
            raise ValidationError.for_field(where, f"line {ex.lineno}: {ex.message}") from ex


def render_page(
    template: str,
    *,
    language: str = "en",
    tenant_settings: Mapping[str, Any] | None = None,
    **context: Any,
) -> str:
    """Render the public page ``template`` in the tenant's language and templates."""
    gettext_, ngettext_ = _newstyle(translations(language))
    variables = {"language": language or "en", "gettext": gettext_, "ngettext": ngettext_,
                 "_": gettext_, **context}
    default = environment_for(None)
    environment = environment_for(tenant_settings)
    if environment is default:
        return default.get_template(template).render(**variables)
    try:
        return environment.render_field(
            f"{OVERRIDE_KEY}.{template}", environment.get_template(template), variables,
            PAGE_LIMITS)
    except Exception as ex:  # never a 500 for a tenant's template
        # A tenant's override that fails, is too slow or too large: the default page.
        log.warning("page_override_failed", template=template, error=str(ex))
        return default.get_template(template).render(**variables)
