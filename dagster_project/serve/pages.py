"""The HTML the service answers with: small, accessible, and complete without JavaScript.

Every page is a heading, a sentence and at most one form whose button POSTs back to the same
link: mail scanners and link previews fetch GET links, so nothing on GET changes anything.
"""

from __future__ import annotations

from html import escape

STYLESHEET = """\
body{margin:0;background:#f4f4f5;color:#18181b;font:16px/1.5 Helvetica,Arial,sans-serif}
main{max-width:32rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:8px}
h1{font-size:1.4rem;margin-top:0}
button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:6px;background:#18181b;
color:#fff;cursor:pointer}
button:focus{outline:3px solid #2563eb;outline-offset:2px}
.secondary{background:#e4e4e7;color:#18181b}
p.note{color:#52525b;font-size:.9rem}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>{escape(title)}</title>\n"
        '<link rel="stylesheet" href="/nudge.css">\n</head>\n<body>\n<main>\n'
        f"<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _form(action: str, value: str, label: str, *, secondary: bool = False) -> str:
    css = ' class="secondary"' if secondary else ""
    return (
        f'<form method="post" action="{escape(action)}">\n'
        f'<input type="hidden" name="action" value="{escape(value)}">\n'
        f'<button type="submit" id="{escape(value)}"{css}>{escape(label)}</button>\n</form>'
    )


def unsubscribe(action: str, list_name: str) -> str:
    return _page(
        "Unsubscribe",
        f"<p>You will no longer receive <strong>{escape(list_name)}</strong> emails from us. "
        "Emails about your orders and account are not affected.</p>\n"
        + _form(action, "unsubscribe", f"Unsubscribe from {list_name} emails"),
    )


def unsubscribed(action: str, list_name: str) -> str:
    return _page(
        "You are unsubscribed",
        f"<p>You will no longer receive <strong>{escape(list_name)}</strong> emails from us. "
        "It can take a few minutes for emails already on their way to stop.</p>\n"
        "<p>Changed your mind?</p>\n"
        + _form(action, "resubscribe", "Subscribe again", secondary=True),
    )


def resubscribed(action: str, list_name: str) -> str:
    return _page(
        "You are subscribed again",
        f"<p>Welcome back: you will receive <strong>{escape(list_name)}</strong> emails again."
        "</p>\n" + _form(action, "unsubscribe", "Unsubscribe", secondary=True),
    )


def confirm(action: str, list_name: str) -> str:
    return _page(
        "Confirm your subscription",
        f"<p>Please confirm that you want to receive <strong>{escape(list_name)}</strong> "
        "emails from us.</p>\n" + _form(action, "confirm", "Yes, subscribe me"),
    )


def confirmed(list_name: str) -> str:
    return _page(
        "Subscription confirmed",
        f"<p>Thank you: you will receive <strong>{escape(list_name)}</strong> emails. Every "
        "email has a link to unsubscribe.</p>",
    )


def invalid_link() -> str:
    return _page(
        "This link does not work",
        "<p>The link is incomplete or was changed. Please use the link exactly as it appears "
        "in the email, or the unsubscribe link at the bottom of any of our emails.</p>\n"
        '<p class="note">Nothing was changed.</p>',
    )


def expired_link() -> str:
    return _page(
        "This confirmation link has expired",
        "<p>For your security, confirmation links work for a limited time. Please sign up "
        "again and we will send you a new one.</p>\n"
        '<p class="note">Nothing was changed.</p>',
    )
