"""``nudge serve``: the small web service that closes the consent loop.

One-click unsubscribe (RFC 8058), the preference page behind the same link, and the double
opt-in confirmation page. Stateless: every link carries a signed token (``links.py``), and
every change is stored durably in the landing store (``landing.py``) before the answer goes
out; ticks drain it into the warehouse. Never reads the warehouse, so a tick holding DuckDB's
single writer lock never slows an answer.
"""

from .app import create_app

__all__ = ["create_app"]
