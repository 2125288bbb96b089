"""Jinja2 rendering: sandboxed, autoescaped, strict, and header-safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_project.rendering import Renderer, RenderError, context_from_json


def _templates(
    tmp_path: Path, subject: str, html: str = "<p>{{ name }}</p>", txt: str = "{{ name }}"
) -> Renderer:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "s.subject.j2").write_text(subject)
    (folder / "s.html.j2").write_text(html)
    (folder / "s.txt.j2").write_text(txt)
    return Renderer(tmp_path)


def test_html_is_autoescaped_and_text_is_not(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "Hi {{ name }}")
    email = renderer.render("t/s", {"name": "Tom & <Jerry>"})
    assert email.html == "<p>Tom &amp; &lt;Jerry&gt;</p>"
    assert email.text == "Tom & <Jerry>\n"


def test_a_missing_variable_is_an_error_naming_the_template(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "Hi {{ nam }}")
    with pytest.raises(RenderError, match=r"t/s\.subject\.j2: UndefinedError"):
        renderer.render("t/s", {"name": "Ann"})


def test_newlines_in_data_cannot_inject_headers_into_the_subject(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "Hi {{ name }}")
    email = renderer.render("t/s", {"name": "Ann\r\nBcc: victim@example.com"})
    assert "\n" not in email.subject and "\r" not in email.subject
    assert email.subject == "Hi Ann Bcc: victim@example.com"


def test_the_sandbox_blocks_unsafe_attribute_access(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "{{ name.__class__.__mro__ }}")
    with pytest.raises(RenderError, match=r"SecurityError|UndefinedError"):
        renderer.render("t/s", {"name": "x"})


def test_an_empty_subject_is_an_error(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "{{ name }}")
    with pytest.raises(RenderError, match="empty subject"):
        renderer.render("t/s", {"name": "  "})


def test_check_reports_a_missing_part(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "x")
    (tmp_path / "t" / "s.txt.j2").unlink()
    with pytest.raises(RenderError, match=r"s\.txt\.j2 is missing"):
        renderer.check("t/s")


def test_shipped_templates_render_with_money_and_date_filters() -> None:
    renderer = Renderer()
    for template in [
        "abandoned_cart/reminder",
        "win_back/we_miss_you",
        "birthday/greeting",
    ]:
        renderer.check(template)
    email = renderer.render(
        "abandoned_cart/reminder",
        {
            "first_name": None,
            "items": [
                {
                    "name": "Mug",
                    "quantity": 2,
                    "price": 12.5,
                    "url": "https://s/p",
                    "image_url": None,
                }
            ],
            "item_count": 2,
            "cart_value": 25,
            "currency": "USD",
            "cart_url": "https://shop.example/cart/k1",
        },
    )
    assert email.subject == "Hi, you left 2 items in your cart"
    assert "2 &times; $12.50" in email.html and "Total: $25.00" in email.text
    winback = renderer.render(
        "win_back/we_miss_you",
        {
            "first_name": "Ann",
            "last_event_at": "2026-03-03T12:00:00+00:00",
            "shop_url": "https://shop.example",
        },
    )
    assert "03 March 2026" in winback.text


def test_every_template_of_the_default_triggers_exists_and_compiles() -> None:
    from dagster_project.triggers import project_triggers

    renderer = Renderer()
    templates = [t for spec in project_triggers()[0] for t in spec.templates]
    assert "abandoned_cart/discount__ten_percent" in templates
    for template in templates:
        renderer.check(template)


def test_context_must_be_a_json_object() -> None:
    assert context_from_json('{"a": 1}') == {"a": 1}
    with pytest.raises(RenderError):
        context_from_json("[1, 2]")


def test_product_picks_render_under_you_might_also_like() -> None:
    renderer = Renderer()
    context = {
        "first_name": "Ann",
        "last_event_at": "2026-03-03T12:00:00+00:00",
        "shop_url": "https://shop.example",
        "recommended_products": [
            {
                "product_id": "p2",
                "name": "Pour-Over <Kettle>",
                "url": "https://shop.example/products/kettle",
                "image_url": None,
                "price": 74,
                "currency": "EUR",
            }
        ],
    }
    email = renderer.render("win_back/we_miss_you", context)
    assert "You might also like" in email.html and "You might also like" in email.text
    assert (
        '<a href="https://shop.example/products/kettle">Pour-Over &lt;Kettle&gt;</a>' in email.html
    )
    assert (
        "\n\nYou might also like:\n- Pour-Over <Kettle>: 74.00 EUR (https://shop.example/products/kettle)"
        in email.text
    )
    # None to show, or a send planned before picks existed: no section, no error.
    without = {k: v for k, v in context.items() if k != "recommended_products"}
    for picks in ({"recommended_products": []}, {}):
        plain = renderer.render("win_back/we_miss_you", {**without, **picks})
        assert "You might also like" not in plain.html + plain.text


def test_a_renderer_compiles_each_template_once_and_a_new_one_sees_edits(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "Hi {{ name }}")
    loads: list[str] = []
    real = renderer.env.get_template

    def counting(name: str, *args: object, **kwargs: object) -> object:
        loads.append(name)
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    renderer.env.get_template = counting  # type: ignore[method-assign]
    assert renderer.render("t/s", {"name": "Ann"}).subject == "Hi Ann"
    assert renderer.render("t/s", {"name": "Bob"}).subject == "Hi Bob"
    # Three parts looked up for the first email, none for the second.
    assert sorted(loads) == ["t/s.html.j2", "t/s.subject.j2", "t/s.txt.j2"]
    # A Renderer lives for one push; the next push's Renderer reads the edited file.
    (tmp_path / "t" / "s.subject.j2").write_text("Hello {{ name }}")
    assert Renderer(tmp_path).render("t/s", {"name": "Ann"}).subject == "Hello Ann"


def test_a_missing_part_fails_each_row_naming_that_part(tmp_path: Path) -> None:
    renderer = _templates(tmp_path, "Hi {{ name }}")
    (tmp_path / "t" / "s.txt.j2").unlink()
    for _ in range(2):  # not cached as a success after the first failure
        with pytest.raises(RenderError, match=r"t/s\.txt\.j2: TemplateNotFound"):
            renderer.render("t/s", {"name": "Ann"})


def test_reads_follows_layouts_and_includes_and_is_unsure_of_dynamic_ones(
    tmp_path: Path,
) -> None:
    renderer = _templates(tmp_path, "Hi {{ name }}", html='{% extends "_base.html.j2" %}')
    (tmp_path / "_base.html.j2").write_text('<p>{% include "_foot.html.j2" %}</p>')
    (tmp_path / "_foot.html.j2").write_text('<a href="{{ confirm_url }}">confirm</a>')
    assert renderer.reads("t/s", "confirm_url")  # two templates away, through the layout
    assert renderer.reads("t/s", "name")
    assert not renderer.reads("t/s", "unsubscribe_url")

    (tmp_path / "u").mkdir()
    for part in ("subject", "html", "txt"):
        (tmp_path / "u" / f"s.{part}.j2").write_text("{% include partial %}")
    # A partial named by the data could read anything: assume it does.
    assert Renderer(tmp_path).reads("u/s", "confirm_url")


def test_the_shipped_templates_read_confirm_url_only_where_they_show_it() -> None:
    renderer = Renderer()
    assert renderer.reads("confirm_subscription/confirm", "confirm_url")
    assert renderer.reads("confirm_subscription/reminder", "confirm_url")
    assert not renderer.reads("abandoned_cart/reminder", "confirm_url")
    assert renderer.reads("abandoned_cart/reminder", "unsubscribe_url")


def test_a_partial_that_does_not_compile_fails_its_rows_not_the_push(tmp_path: Path) -> None:
    # check() compiles the step's own templates, not its partials: a partial that parses but
    # does not compile (a block defined twice) must fail the rows that render it, one by one,
    # as before; asking whether the step reads a variable must not raise instead.
    renderer = _templates(tmp_path, "Hi {{ name }}", html='{% include "_bad.html.j2" %}')
    (tmp_path / "_bad.html.j2").write_text("{% block a %}{% endblock %}{% block a %}{% endblock %}")
    renderer.check("t/s")
    assert renderer.reads("t/s", "confirm_url")  # unknown: assume it does
    with pytest.raises(RenderError, match=r"s\.html\.j2"):
        renderer.render("t/s", {"name": "Ann"})
