"""Double opt-in over real HTTP: the confirm link, its expiry, and what it records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from dagster_project.links import LinkSettings
from tests.support.service import Service


def _path(links: LinkSettings, issued: datetime) -> str:
    return links.confirm_url("cust_9", "marketing", issued).removeprefix(links.public_url)


def test_get_asks_and_only_the_post_confirms(service: Service, links: LinkSettings) -> None:
    url = service.url + _path(links, datetime.now(UTC))
    page = httpx.get(url)
    assert page.status_code == 200 and 'id="confirm"' in page.text
    assert service.store.latest("cust_9", "marketing") is None
    done = httpx.post(url, data={"action": "confirm"})
    assert done.status_code == 200 and "Subscription confirmed" in done.text
    latest = service.store.latest("cust_9", "marketing")
    assert latest is not None and (latest.status, latest.source) == ("subscribed", "double_opt_in")


def test_an_expired_confirm_link_says_so_and_changes_nothing(
    service: Service, links: LinkSettings
) -> None:
    url = service.url + _path(links, datetime.now(UTC) - timedelta(days=8))
    for response in (httpx.get(url), httpx.post(url, data={"action": "confirm"})):
        assert response.status_code == 410
        assert "expired" in response.text
    assert service.store.latest("cust_9", "marketing") is None


def test_an_unsubscribe_token_does_not_confirm_and_vice_versa(
    service: Service, links: LinkSettings
) -> None:
    unsubscribe = links.unsubscribe_url("cust_9", "marketing", "s").removeprefix(links.public_url)
    token = unsubscribe.removeprefix("/u/")
    assert (
        httpx.post(f"{service.url}/confirm/{token}", data={"action": "confirm"}).status_code == 400
    )
    confirm = _path(links, datetime.now(UTC)).removeprefix("/confirm/")
    one_click = {"List-Unsubscribe": "One-Click"}
    assert httpx.post(f"{service.url}/u/{confirm}", data=one_click).status_code == 400
    assert service.store.latest("cust_9", "marketing") is None
