"""nudge serve over real HTTP: one-click unsubscribe (RFC 8058), the preference page, bad input."""

from __future__ import annotations

import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dagster_project.links import LinkSettings
from tests.support.service import Service

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _path(links: LinkSettings, customer: str = "cust_1", send_id: str = "s1") -> str:
    return links.unsubscribe_url(customer, "marketing", send_id).removeprefix(links.public_url)


def _stored(service: Service) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(service.store.path) as con:
        return con.execute(
            "select customer_id, status, source, send_id from consent_changes order by changed_at"
        ).fetchall()


def test_one_click_post_unsubscribes_at_once_with_a_200_and_no_redirect(
    service: Service, links: LinkSettings
) -> None:
    response = httpx.post(service.url + _path(links), data=ONE_CLICK)
    assert response.status_code == 200
    assert "location" not in response.headers
    assert _stored(service) == [("cust_1", "unsubscribed", "one_click", "s1")]


def test_one_click_works_as_multipart_too(service: Service, links: LinkSettings) -> None:
    response = httpx.post(
        service.url + _path(links), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.status_code == 200, response.text
    assert _stored(service) == [("cust_1", "unsubscribed", "one_click", "s1")]


def test_get_shows_a_page_with_a_post_button_and_changes_nothing(
    service: Service, links: LinkSettings
) -> None:
    response = httpx.get(service.url + _path(links))
    assert response.status_code == 200
    assert '<form method="post"' in response.text
    assert 'id="unsubscribe"' in response.text
    assert _stored(service) == []
    # A link preview or mail scanner fetching it twice changes nothing either.
    httpx.head(service.url + _path(links))
    httpx.get(service.url + _path(links))
    assert _stored(service) == []


def test_the_page_unsubscribes_then_offers_and_performs_a_resubscribe(
    service: Service, links: LinkSettings
) -> None:
    url = service.url + _path(links)
    page = httpx.post(url, data={"action": "unsubscribe"})
    assert page.status_code == 200 and 'id="resubscribe"' in page.text
    assert 'id="resubscribe"' in httpx.get(url).text  # the page knows the new state
    page = httpx.post(url, data={"action": "resubscribe"})
    assert page.status_code == 200 and "subscribed again" in page.text
    assert [row[1:3] for row in _stored(service)] == [
        ("unsubscribed", "preference_page"),
        ("subscribed", "preference_page"),
    ]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-3], id="truncated"),
        pytest.param(lambda t: ("A" if t[0] != "A" else "B") + t[1:], id="tampered-claim"),
        pytest.param(lambda t: t.split(".")[0], id="no-signature"),
        pytest.param(lambda t: "not-a-token", id="garbage"),
    ],
)
def test_a_bad_token_gets_a_clear_400_page_and_changes_nothing(
    service: Service, links: LinkSettings, mangle
) -> None:
    token = _path(links).removeprefix("/u/")
    url = f"{service.url}/u/{mangle(token)}"
    for response in (httpx.get(url), httpx.post(url, data=ONE_CLICK)):
        assert response.status_code == 400
        assert "This link does not work" in response.text
        assert "Nothing was changed" in response.text
    assert _stored(service) == []


def test_a_token_signed_with_a_foreign_secret_is_refused(service: Service) -> None:
    foreign = LinkSettings.build(public_url="http://127.0.0.1:8080", secret="f" * 40)
    response = httpx.post(service.url + _path(foreign), data=ONE_CLICK)
    assert response.status_code == 400
    assert _stored(service) == []


def test_links_signed_with_the_previous_secret_still_work_after_a_rotation(
    service: Service,
) -> None:
    before_rotation = LinkSettings.build(public_url="http://127.0.0.1:8080", secret="o" * 40)
    response = httpx.post(service.url + _path(before_rotation), data=ONE_CLICK)
    assert response.status_code == 200
    assert _stored(service) == [("cust_1", "unsubscribed", "one_click", "s1")]


def test_wrong_content_type_or_body_gets_a_4xx_with_a_reason(
    service: Service, links: LinkSettings
) -> None:
    url = service.url + _path(links)
    as_json = httpx.post(url, json={"List-Unsubscribe": "One-Click"})
    assert as_json.status_code == 415 and "form body" in as_json.text
    wrong_value = httpx.post(url, data={"List-Unsubscribe": "Yes"})
    assert wrong_value.status_code == 400 and "One-Click" in wrong_value.text
    assert _stored(service) == []


def test_an_oversized_body_gets_413_and_stores_nothing(
    service: Service, links: LinkSettings
) -> None:
    url = service.url + _path(links)
    big = {"List-Unsubscribe": "One-Click", "pad": "x" * 100_000}
    assert httpx.post(url, data=big).status_code == 413

    # Without a Content-Length (chunked), the limit still holds.
    def chunks():
        yield b"List-Unsubscribe=One-Click&pad="
        for _ in range(100):
            yield b"x" * 1000

    chunked = httpx.post(
        url, content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert chunked.status_code == 413
    assert _stored(service) == []


def test_replays_of_the_same_one_click_count_once(service: Service, links: LinkSettings) -> None:
    url = service.url + _path(links)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.post(url, data=ONE_CLICK).status_code, range(16)))
    assert codes == [200] * 16
    assert _stored(service) == [("cust_1", "unsubscribed", "one_click", "s1")]


def test_pages_carry_security_headers_and_get_no_cookies(
    service: Service, links: LinkSettings
) -> None:
    response = httpx.get(service.url + _path(links))
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in response.headers
    assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}


def test_logs_name_the_route_never_the_token(
    service: Service, links: LinkSettings, caplog: pytest.LogCaptureFixture
) -> None:
    path = _path(links)
    with caplog.at_level(logging.INFO, logger="nudge.serve"):
        httpx.post(service.url + path, data=ONE_CLICK)
        httpx.get(service.url + path)
    lines = [r.getMessage() for r in caplog.records if r.name == "nudge.serve"]
    assert any("POST /u/<token> 200" in line for line in lines), lines
    token = path.removeprefix("/u/")
    assert not any(token in line or token[:12] in line for line in lines)
