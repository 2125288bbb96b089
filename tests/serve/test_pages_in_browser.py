"""The service's pages in a real headless Chromium with JavaScript off: they render, say what
will happen, and their buttons work."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster_project.links import LinkSettings
from tests.support import browser
from tests.support.service import Service


def _url(service: Service, link: str, links: LinkSettings) -> str:
    return service.url + link.removeprefix(links.public_url)


def test_the_unsubscribe_button_works_without_javascript_and_offers_a_resubscribe(
    service: Service, links: LinkSettings
) -> None:
    browser.chromium()
    url = _url(service, links.unsubscribe_url("cust_1", "marketing", "s1"), links)
    page = browser.page_without_js(url)
    assert page.status == 200 and "Unsubscribe from marketing emails" in page.dom
    assert not page.errors, page.console
    assert service.store.latest("cust_1", "marketing") is None  # opening it changed nothing

    done = browser.click(url, "#unsubscribe")
    assert done.status == 200 and "You are unsubscribed" in done.dom
    assert not done.errors, done.console
    latest = service.store.latest("cust_1", "marketing")
    assert latest is not None and (latest.status, latest.source) == (
        "unsubscribed",
        "preference_page",
    )

    again = browser.click(url, "#resubscribe")
    assert "subscribed again" in again.dom
    latest = service.store.latest("cust_1", "marketing")
    assert latest is not None and latest.status == "subscribed"


def test_the_confirm_button_records_a_double_opt_in(service: Service, links: LinkSettings) -> None:
    browser.chromium()
    url = _url(service, links.confirm_url("cust_2", "marketing", datetime.now(UTC)), links)
    done = browser.click(url, "#confirm")
    assert done.status == 200 and "Subscription confirmed" in done.dom
    assert not done.errors, done.console
    latest = service.store.latest("cust_2", "marketing")
    assert latest is not None and (latest.status, latest.source) == (
        "subscribed",
        "double_opt_in",
    )


def test_a_broken_link_shows_a_readable_page(service: Service) -> None:
    browser.chromium()
    page = browser.page_without_js(service.url + "/u/broken.token")
    assert page.status == 400 and "This link does not work" in page.dom
