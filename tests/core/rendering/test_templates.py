"""Sandboxed templates: personalisation, escaping, escapes blocked, limits, errors."""

from __future__ import annotations

import email
from email import policy

import pytest

from swiftmail_core.errors import ValidationError
from swiftmail_core.rendering import RenderLimits, render_preview, validate_template


def _parts(renderer, contact, ledger_id=1):
    return renderer.render_parts(ledger_id, contact, None)


def test_personalisation_with_attributes(make_renderer, campaign, contact) -> None:
    parts = _parts(make_renderer(campaign), contact)
    assert parts.subject == "Hi Alice, autumn deals"
    assert "Hello Alice!" in parts.html
    assert "Your plan: gold at Shop &amp; Co (Autumn sale)" in parts.html
    assert "Item A" in parts.html and "Item B" in parts.html
    assert "Deals for Alice Example" in parts.html  # preheader
    assert "Hello Alice!" in parts.text
    assert "Your plan: gold at Shop & Co (Autumn sale)" in parts.text


def test_missing_attributes_render_empty_not_crash(make_renderer, campaign, contact) -> None:
    contact["attributes"] = {}
    parts = _parts(make_renderer(campaign), contact)
    assert "Hello friend!" in parts.html
    assert parts.subject == "Hi , autumn deals"


def test_html_is_autoescaped_text_and_subject_are_not(make_renderer, campaign, contact) -> None:
    contact["attributes"]["first_name"] = '<script>alert("x")</script>&'
    parts = _parts(make_renderer(campaign), contact)
    assert "<script>" not in parts.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;" in parts.html
    assert '<script>alert("x")</script>&' in parts.text
    assert parts.subject.startswith('Hi <script>alert("x")</script>&')


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ contact.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ self._TemplateReference__context }}",
        "{{ contact.update({'email': 'x'}) }}",
        "{{ attributes.clear() }}",
        "{{ ''.format.__globals__ }}",
        "{{ '{0.__class__}'.format(contact) }}",
        "{{ lipsum(1000000) }}",
        "{{ self.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ contact|attr('__class__') }}",
        "{% for x in [1] %}{{ loop.__class__ }}{% endfor %}",
        "{% include '/etc/passwd' %}",
        "{% import 'os' as os %}",
        "{{ _sm_iter.__self__ }}",
        "{{ '{a.__class__}'.format_map({'a': 1}) }}",
    ],
)
def test_sandbox_escape_attempts_are_refused(source: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_template("s", f"<p>{source}</p>")
    assert caught.value.errors[0]["field"] == "html"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{{ 2 ** 100000000 }}",
        "{{ '%999999999s' % 1 }}",
        "{{ '%999999999s'|format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:>{w}}'.format(1, w=999999999) }}",
        "{{ 'a'.center(1000000000) }}",
        "{{ 'a'|center(1000000000) }}",
        "{{ 'a'|indent(1000000000) }}",
        "{{ range(100)|slice(1000000000)|list }}",
        "{{ ('x' * 10000).replace('x', 'y' * 10000) }}",
        "{{ range(1000000)|list }}",
    ],
)
def test_huge_values_are_refused(source: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_template("s", source)
    assert caught.value.errors[0]["field"] == "html"


def test_output_size_limit() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_template(
            "s",
            "{% for i in range(10000) %}0123456789{% endfor %}",
            limits=RenderLimits(max_output_chars=50_000),
        )
    assert "html:" in caught.value.detail and "larger than 50000" in caught.value.detail


def test_render_time_limit_stops_silent_nested_loops() -> None:
    # No output and no calls inside: only the per-iteration check can stop it.
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(ValidationError) as caught:
        validate_template("s", "x", text=source, limits=RenderLimits(max_render_seconds=0.05))
    assert caught.value.detail.startswith("text: line 1: template took too long")


@pytest.mark.parametrize(
    ("field", "kwargs", "expected"),
    [
        ("html", {"html": "<p>\nok\n{{ contact.name }\n</p>"}, "html: line 3: unexpected '}'"),
        ("subject", {"subject": "Hi {{ contact.name"}, "subject: line 1:"),
        ("text", {"text": "a\n{% for x in y %}\n"}, "text: line 2:"),
        ("preheader", {"preheader": "{% if %}"}, "preheader: line 1:"),
    ],
)
def test_syntax_errors_name_the_field_and_line(field, kwargs, expected) -> None:
    fields = {"subject": "s", "html": "<p>x</p>", "text": "", "preheader": ""}
    fields.update(kwargs)
    with pytest.raises(ValidationError) as caught:
        validate_template(**fields)
    assert caught.value.detail.startswith(expected), caught.value.detail
    assert caught.value.errors[0]["field"] == field
    assert caught.value.status == 422


def test_runtime_errors_name_the_field_and_line() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_template("s", "<p>a</p>\n<p>{{ 1 / 0 }}</p>")
    assert caught.value.detail.startswith("html: line 2: ZeroDivisionError")


def test_valid_template_passes() -> None:
    assert validate_template("Hi {{ contact.first_name }}", "<p>{{ contact.name }}</p>") is None


def test_text_derived_from_html_when_none_given(make_renderer, campaign, contact) -> None:
    parts = _parts(make_renderer(campaign), contact)
    assert "<p" not in parts.text and "Hello Alice!" in parts.text
    assert "color" not in parts.text  # <style> skipped
    assert "Mail us ( mailto:help@shop.example.com )" in parts.text
    assert "Unsubscribe ( https://mail.swiftmail.test/u/" in parts.text


def test_given_text_is_used(make_renderer, campaign, contact) -> None:
    campaign["text"] = "Plain for {{ contact.first_name }}: {{ unsubscribe_url }}"
    parts = _parts(make_renderer(campaign), contact)
    assert parts.text.startswith("Plain for Alice: https://mail.swiftmail.test/u/")


def test_css_is_inlined_once_when_safe(make_renderer, campaign, contact) -> None:
    renderer = make_renderer(campaign)
    assert renderer.inline_per_message is False
    html = _parts(renderer, contact).html
    assert "<style" not in html
    assert 'class="big" style="color: #333333;font-size: 20px;"' in html


def test_css_is_inlined_per_message_when_jinja_sits_inside_a_tag(
    make_renderer, campaign, contact
) -> None:
    campaign["html"] = (
        "<html><head><style>p { color: red; }</style></head><body>"
        "<p {% if contact.first_name %}class=\"named\"{% endif %}>Hi {{ contact.first_name }}</p>"
        "{{ unsubscribe_url }}</body></html>"
    )
    renderer = make_renderer(campaign)
    assert renderer.inline_per_message is True
    html = _parts(renderer, contact).html
    assert 'class="named" style="color: red;"' in html and "Hi Alice" in html


def test_remote_stylesheets_are_never_fetched(make_renderer, campaign, contact) -> None:
    campaign["html"] = (
        '<html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css">'
        '<link rel="stylesheet" href="file:///etc/passwd"></head>'
        "<body><p>{{ unsubscribe_url }}</p></body></html>"
    )
    html = _parts(make_renderer(campaign), contact).html
    assert "root:" not in html


def test_preview_renders_without_tracking_or_real_tokens() -> None:
    preview = render_preview(
        {
            "subject": "Hi {{ contact.first_name }}",
            "html": '<p>Hi {{ contact.first_name }}</p><a href="https://a.example.com/">a</a>',
            "text": "",
            "preheader": "",
        },
        {"contact": {"email": "p@example.com", "attributes": {"first_name": "Pat"}}},
    )
    assert preview["subject"] == "Hi Pat"
    assert 'href="https://a.example.com/"' in preview["html"]
    assert "/t/o/" not in preview["html"] and "/u/preview" in preview["html"]
    assert "Hi Pat" in preview["text"]


def test_preview_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        render_preview({"subject": "x", "html": "{{ x }"})
    assert caught.value.errors[0]["field"] == "html"


def test_message_parses(make_renderer, campaign, contact) -> None:
    raw = make_renderer(campaign).render(7, contact).raw
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed.defects == []
    assert parsed.get_body(("plain",)).get_content().startswith("Hello Alice!")


@pytest.mark.parametrize(
    "source",
    [
        # Doubling a string without output: each step is fast, memory is not.
        "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% macro grow(s, n) %}{% if n %}{{ grow(s ~ s, n - 1) }}{% else %}{{ s|length }}"
        "{% endif %}{% endmacro %}{{ grow('xxxxxxxxxx', 60) }}",
        "{% set ns = namespace(s='x' * 50000) %}{{ ([ns.s] * 90000)|join }}",
        "{% set ns = namespace(s='x' * 50000) %}{{ ''.join([ns.s] * 90000) }}",
    ],
)
def test_exponential_growth_is_refused(source: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_template("s", source)
    assert "too large" in caught.value.detail


def test_encoded_braces_in_html_never_become_template_syntax(
    make_renderer, campaign, contact
) -> None:
    campaign["html"] = (
        "<html><head><style>p { color: red; }</style></head><body>"
        "<p>Literal &#123;&#123; contact.email }} and &#123;% raw %&#125;</p>"
        "<p>{{ unsubscribe_url }}</p></body></html>"
    )
    parts = make_renderer(campaign).render_parts(1, contact)
    assert "alice@example.org" not in parts.html and "alice@example.org" not in parts.text
    assert "{{ contact.email }}" in parts.text


def test_attribute_names_win_over_dict_methods(make_renderer, campaign, contact) -> None:
    contact["attributes"].update(items="3 items", keys="two keys", get="got")
    campaign["subject"] = "{{ contact.items }} / {{ attributes.keys }} / {{ contact.get }}"
    parts = make_renderer(campaign).render_parts(1, contact)
    assert parts.subject == "3 items / two keys / got"


def test_derived_text_keeps_block_tags_from_skipped_elements(make_renderer, campaign, contact) -> None:
    campaign["html"] = (
        "<html><head><title>{% if contact.first_name %}Hi</title>{% endif %}"
        "<style>{% if attributes.plan %}p { color: red; }{% endif %}</style></head>"
        "<body><p>Body {{ contact.first_name }}</p><p>{{ unsubscribe_url }}</p></body></html>"
    )
    parts = make_renderer(campaign).render_parts(1, contact)
    assert "Body Alice" in parts.text and "color" not in parts.text


def test_loop_forms_still_work_with_the_guarded_iteration() -> None:
    from swiftmail_core.rendering.renderer import TEXT_SANDBOX

    template = TEXT_SANDBOX.compile_field(
        "text",
        "{% for n in tree recursive %}[{{ n.name }}{% if n.kids %}{{ loop(n.kids) }}{% endif %}]"
        "{% else %}empty{% endfor %}|{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}"
        "{% for x in 'abc' if x != 'b' %}{{ loop.index }}{{ x }}{% endfor %}",
    )
    context = {"tree": [{"name": "a", "kids": [{"name": "b", "kids": []}]}, {"name": "c"}],
               "d": {"b": 2, "a": 1}}
    assert TEXT_SANDBOX.render_field("text", template, context, RenderLimits()) == (
        "[a[b]][c]|a=1;b=2;1a2c"
    )
    assert TEXT_SANDBOX.render_field("text", template, {"tree": [], "d": {}}, RenderLimits()) == (
        "empty|1a2c"
    )
