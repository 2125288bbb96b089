"""mask_email keeps logs useful for debugging without putting recipients' addresses in them."""

from __future__ import annotations

import pytest

from dagster_project.masking import mask_email, mask_emails_in_text


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("jane.doe@example.com", "j***@e***.com"),
        ("a@b.co", "a***@b***.co"),
        ("Bob+tag@mail.example.co.uk", "B***@m***.uk"),
        ("  padded@example.org  ", "p***@e***.org"),
        ("root@localhost", "r***@l***"),
        # Malformed values are still personal data: masked whole, never echoed.
        ("not-an-address", "***"),
        ("@example.com", "***"),
        ("jane@", "***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_email(addr: str | None, expected: str) -> None:
    assert mask_email(addr) == expected


def test_mask_email_never_contains_the_full_local_part_or_domain() -> None:
    masked = mask_email("jane.doe@example.com")
    assert "jane.doe" not in masked
    assert "example" not in masked


def test_mask_emails_in_text_masks_every_address_and_keeps_the_rest() -> None:
    text = "Rejected jane.doe@example.com (cc: bob@corp.io): mailbox full."
    assert mask_emails_in_text(text) == "Rejected j***@e***.com (cc: b***@c***.io): mailbox full."


def test_mask_emails_in_text_leaves_text_without_addresses_alone() -> None:
    assert mask_emails_in_text("HTTP 500: Internal error") == "HTTP 500: Internal error"
