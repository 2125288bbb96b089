"""Link tokens and link settings: unforgeable, rotation-proof, refused where they would not work."""

from __future__ import annotations

import base64
import hmac
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dagster_project.config import ConfigError
from dagster_project.links import InvalidToken, LinkSettings

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _links(**overrides) -> LinkSettings:
    return LinkSettings.build(
        **{"public_url": "https://nudge.shop.example", "secret": "k" * 40, **overrides}
    )


def test_an_unsubscribe_token_round_trips_is_deterministic_and_never_expires() -> None:
    links = _links()
    token = links.token("unsubscribe", "cust_1", "marketing", "send_1")
    assert token == links.token("unsubscribe", "cust_1", "marketing", "send_1")
    claim = links.verify(token, now=NOW + timedelta(days=3650))
    assert (claim.kind, claim.customer_id, claim.list, claim.send_id) == (
        "unsubscribe",
        "cust_1",
        "marketing",
        "send_1",
    )
    # Another customer, list or send signs differently.
    assert token != links.token("unsubscribe", "cust_2", "marketing", "send_1")
    assert token != links.token("unsubscribe", "cust_1", "news", "send_1")


def test_a_confirm_token_expires_after_the_configured_days() -> None:
    links = _links(confirm_days=7)
    token = links.token("confirm", "cust_1", "marketing", issued_at=NOW)
    assert links.verify(token, now=NOW + timedelta(days=6, hours=23)).kind == "confirm"
    with pytest.raises(InvalidToken, match="expired"):
        links.verify(token, now=NOW + timedelta(days=7, seconds=1))


def test_rotation_accepts_the_previous_secret_and_nothing_else() -> None:
    old = _links(secret="o" * 40)
    rotated = _links(secret="n" * 40, previous_secret="o" * 40)
    token = old.token("unsubscribe", "cust_1", "marketing", "s")
    assert rotated.verify(token).customer_id == "cust_1"
    with pytest.raises(InvalidToken):
        _links(secret="n" * 40).verify(token)


@pytest.mark.parametrize("secret", ["k" * 32, "é" * 40, "b" * 64, "l" * 65, "x" * 300])
def test_the_signature_is_standard_hmac_sha256_so_links_in_inboxes_stay_valid(secret) -> None:
    # The MAC is computed from pre-hashed key pads (fast, and holds the GIL): it must be the
    # very bytes of HMAC-SHA256, for keys shorter than, equal to and longer than its block, or
    # every link already mailed would stop verifying.
    links = _links(secret=secret)
    token = links.token("unsubscribe", "cust_1", "marketing", "send_1")
    body, _, mac = token.partition(".")
    expected = hmac.digest(secret.encode(), body.encode(), "sha256")[:16]
    assert base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)) == expected
    assert links.verify(token).customer_id == "cust_1"


def test_changing_any_character_of_a_token_invalidates_it() -> None:
    links = _links()
    token = links.token("unsubscribe", "cust_1", "marketing", "s")
    for i in range(len(token)):
        if token[i] == ".":
            continue
        swapped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        with pytest.raises(InvalidToken):
            links.verify(swapped)


def test_the_headers_are_rfc_8058_with_the_optional_mailto() -> None:
    links = _links(unsubscribe_mailto="unsubscribe@shop.example")
    url = links.unsubscribe_url("cust_1", "marketing", "s")
    assert url.startswith("https://nudge.shop.example/u/")
    headers = links.unsubscribe_headers(url)
    assert headers == {
        "List-Unsubscribe": f"<{url}>, <mailto:unsubscribe@shop.example?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"public_url": "http://nudge.shop.example"}, "must use https"),
        ({"public_url": "nudge.shop.example"}, "absolute http"),
        ({"secret": "short"}, "at least 32"),
        ({"previous_secret": "short"}, "PREVIOUS must be at least 32"),
        ({"unsubscribe_mailto": "a@b.example, c@d.example"}, "one address"),
        ({"confirm_days": "a week"}, "whole number"),
    ],
)
def test_bad_link_settings_are_refused_with_the_variable_named(settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _links(**settings)


def test_a_real_provider_needs_a_configured_secret_and_a_public_https_url(
    tmp_path: Path,
) -> None:
    generated = LinkSettings.build(secret_file=tmp_path / "link_secret")
    generated.require_for("outbox")  # the demo: fine
    with pytest.raises(ConfigError, match="NUDGE_LINK_SECRET"):
        generated.require_for("sendgrid")
    loopback = LinkSettings.build(secret="k" * 40)
    with pytest.raises(ConfigError, match="NUDGE_PUBLIC_URL"):
        loopback.require_for("postmark")
    _links().require_for("postmark")


def test_with_nothing_configured_one_secret_is_generated_kept_private_and_shared(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "link_secret"
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: LinkSettings.build(secret_file=path).secret, range(16)))
    assert len(secrets) == 1 and len(secrets.pop()) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["link_secret"]
    assert repr(LinkSettings.build(secret_file=path)).count("secret") == 0


def test_serve_behind_a_public_url_refuses_a_secret_of_its_own(tmp_path: Path) -> None:
    # A service that generated its own key would refuse every link the ticks signed.
    LinkSettings.build(secret_file=tmp_path / "s").require_shared()  # loopback demo: fine
    public = LinkSettings.build(public_url="https://u.shop.example", secret_file=tmp_path / "s")
    with pytest.raises(ConfigError, match="NUDGE_LINK_SECRET is unset"):
        public.require_shared()
    _links().require_shared()


def test_a_confirmation_email_carries_a_confirm_link_the_service_accepts() -> None:
    # compose signs confirm_url only for templates that read it (through their layout here):
    # the double opt-in email must still get one, and a cart reminder need not.
    from dagster_project.compose import render_batch
    from dagster_project.rendering import Renderer
    from dagster_project.sequences import parse_sequence
    from dagster_project.triggers import TriggerSpec
    from tests.support.factories import CART_SPEC, cart_row

    links = _links()
    confirm = TriggerSpec(
        name="confirm_subscription",
        model="confirm_subscription_eligibility",
        relation="audience.confirm_subscription_eligibility",
        sequence=parse_sequence(
            "confirm_subscription",
            {"category": "transactional", "steps": [{"name": "confirm", "delay": "0h"}]},
            "tests/test_links.py",
        ),
    )
    row = {**cart_row("7"), "step": "confirm", "template": None, "as_of": NOW.isoformat()}
    messages, failures = render_batch(
        confirm, Renderer(), [("send_7", json.dumps(row, default=str))], "s@x.io", links=links
    )
    assert not failures
    path = messages[0].text.split(f"{links.public_url}/confirm/")[1].split()[0]
    claim = links.verify(path, now=NOW)
    assert (claim.kind, claim.customer_id, claim.issued_at) == ("confirm", "cust_7", NOW)

    cart = {**cart_row("cust_8"), "as_of": NOW.isoformat()}
    messages, failures = render_batch(
        CART_SPEC, Renderer(), [("send_8", json.dumps(cart, default=str))], "s@x.io", links=links
    )
    assert not failures and "/confirm/" not in messages[0].html + messages[0].text
    assert "/u/" in messages[0].headers["List-Unsubscribe"]
