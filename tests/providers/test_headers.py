"""A message's extra headers: the gate every adapter shares (``base.checked_headers``) and the
folding that keeps long values out of RFC 2047 encoded words in the ``.eml`` and SMTP messages
(``outbox.add_verbatim_headers``).

Each adapter's own test module sends ``List-Unsubscribe`` through its real server; these are the
rules they all apply.
"""

from __future__ import annotations

import email
import re
from email import policy
from email.message import EmailMessage

import pytest

from dagster_project.providers.base import checked_headers
from dagster_project.providers.outbox import (
    VERBATIM_SMTP_POLICY,
    add_verbatim_headers,
    fold_header,
)
from tests.support.factories import unsubscribe_headers


def test_headers_pass_through_unchanged_and_in_order() -> None:
    headers = {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", **unsubscribe_headers(1)}
    assert checked_headers(headers) == list(headers.items())
    assert checked_headers({}) == []


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"List-Unsubscribe": "<https://x/u/1>\r\nBcc: victim@example.com"}, "line break"),
        ({"List-Unsubscribe": "<https://x/u/1>\nBcc: victim@example.com"}, "line break"),
        ({"List-Unsubscribe": "<https://x/u/1>\r"}, "line break"),
        ({"List-Unsubscribe": "<https://x/u/\x001>"}, "control characters"),
        ({"X-Campaign": "Été"}, "non-ASCII"),
        ({"List-Unsubscribe": "  "}, "empty value"),
        ({"List Unsubscribe": "<https://x/u/1>"}, "not an RFC 5322 field name"),
        ({"Bcc:": "victim@example.com"}, "not an RFC 5322 field name"),
        ({"": "x"}, "not an RFC 5322 field name"),
        ({"bcc": "victim@example.com"}, "set by nudge or the provider"),
        ({"Subject": "another subject"}, "set by nudge or the provider"),
        ({"X-Nudge-Send-Id": "someone-else"}, "set by nudge or the provider"),
        ({"List-Unsubscribe": "<a>", "list-unsubscribe": "<b>"}, "given twice"),
        # An injection is called one whatever the name it hides behind.
        ({"Bcc": "x\r\nBcc: victim@example.com"}, "line break"),
        ({"X-Tab": "a\tb", "Subject": "s"}, "set by nudge or the provider"),
        ({"X-Del": "a\x7fb"}, "control characters"),
        ({"X-Sep": "a\u2028b"}, "non-ASCII"),
        ({1: "x"}, "not an RFC 5322 field name"),
        ({"X-Count": 3}, "int value"),
    ],
)
def test_headers_that_cannot_be_sent_are_refused_naming_the_header_not_its_value(
    headers: dict[str, str], why: str
) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        checked_headers(headers)
    assert "victim" not in str(caught.value)


def test_folding_breaks_only_before_spaces_so_unfolding_gives_the_value_back() -> None:
    value = unsubscribe_headers(1)["List-Unsubscribe"]
    folded = fold_header("List-Unsubscribe", value)
    assert "\n" in folded  # longer than one line: folded between the two URIs
    assert re.sub(r"\n(?= )", "", folded) == value
    short = "List-Unsubscribe=One-Click"
    assert fold_header("List-Unsubscribe-Post", short) == short


def test_a_word_longer_than_998_characters_cannot_be_folded() -> None:
    with pytest.raises(ValueError, match="998"):
        fold_header("List-Unsubscribe", "<https://x/u/" + "t" * 990 + ">")


def test_verbatim_headers_are_written_without_encoded_words_and_parse_back_exactly() -> None:
    headers = unsubscribe_headers(7)
    mime = EmailMessage()
    mime["Subject"] = "Hi"
    add_verbatim_headers(mime, headers)
    mime.set_content("Hello")

    data = mime.as_bytes(policy=VERBATIM_SMTP_POLICY)

    assert b"=?" not in data
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(data, policy=policy.default)
    for name, value in headers.items():
        assert parsed.get_all(name) == [value]
