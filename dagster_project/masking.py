"""Mask personal data before it reaches logs, Dagster metadata or a preview page.

Recipient addresses are personal data. Logs and run metadata are read by more people, and kept
longer, than the ledger, so anything nudge logs about a recipient goes through
:func:`mask_email` first. The mask keeps just enough to tell two addresses apart by eye when
debugging ("j***@e***.com" vs "m***@g***.com") without being a usable address.
"""

from __future__ import annotations

import re

_MASK = "***"

# Deliberately loose: it is for scrubbing free text (provider error messages, exception strings)
# where a false positive only costs a few masked characters, and a miss would leak an address.
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+'\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*")


def mask_email(addr: str | None) -> str:
    """Return a masked form of an email address, e.g. ``jane.doe@example.com -> j***@e***.com``.

    Keeps the first character of the local part, the first character of the domain and the
    top-level domain. Never raises: anything that is not recognisably an address is masked
    whole, because a malformed value in a log line is still personal data.
    """
    if not addr:
        return ""
    value = addr.strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return _MASK
    masked_local = local[0] + _MASK
    host, dot, tld = domain.rpartition(".")
    if not dot or not host or not tld:
        return f"{masked_local}@{domain[0]}{_MASK}"
    return f"{masked_local}@{host[0]}{_MASK}.{tld}"


def mask_emails_in_text(text: str) -> str:
    """Mask every email address found inside free text (error messages, exception strings)."""
    return _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text)
