"""Synthetic, deliberately messy e-commerce warehouse for the demo and for benchmarks.

``generate_demo_warehouse`` writes three raw tables (the public input contract of nudge):

* ``raw.customers(customer_id, email, first_name, timezone, birthday, created_at)``
* ``raw.events(event_id, customer_id, event_name, occurred_at, properties)``; ``properties`` is
  JSON *text* so that malformed payloads can exist, exactly as they do after real ingestion.
* ``raw.subscriptions(customer_id, list, status, changed_at)``: the marketing consent history.

The data is shaped around what the demo exercises: the trigger catalogue over the days before
``end`` (the demo's last tick). Sign-ups through the month feed the welcome series, orders its
exit and the review requests, carts that go quiet near ``end`` the abandoned-cart sequence,
repeated product views browse abandonment, customers whose 90-day mark of silence falls near
``end`` the win-back, and birthdays on ``end``'s date. Then it adds the dirt that a real pipeline
must survive (duplicates, anonymous events, broken JSON, clock skew, unknown events, invalid
emails and time zones).

Everything is derived from one ``random.Random(seed)``; no wall clock is read, so the same
arguments always produce byte-identical tables. Rows are built as Python lists of primitives
(timestamps as epoch microseconds) and bulk-loaded through Arrow: 100k customers take seconds.
Events stream to DuckDB in chunks of ``CHUNK_ROWS``, so memory follows the number of customers,
not the length of their history; a longer ``days`` gives proportionally more events (the 1-6
sessions are drawn per ~30 days), which is how the benchmarks reach tens of millions.
"""

from __future__ import annotations

import json
import random
import unicodedata
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, overload

import duckdb
import pyarrow as pa

from .warehouse import sql

__all__ = ["generate_demo_warehouse", "generate_to_file"]

US = 1_000_000  # microseconds per second
MINUTE = 60 * US
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# --------------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------------

# A few accented names on purpose: templates must render them and the e-mail local part must be
# ASCII-folded (José -> jose), which is what a real sign-up form produces.
_FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Isabella", "James",
    "Mia", "William", "Amelia", "Benjamin", "Harper", "Lucas", "Evelyn", "Henry", "Abigail",
    "Alexander", "Emily", "Daniel", "Ella", "Matthew", "Chloe", "Samuel", "Grace", "David", "Zoe",
    "Joseph", "Hannah", "Carter", "Lily", "Owen", "Nora", "Wyatt", "Aria", "Jack", "Layla", "Leo",
    "Priya", "Arjun", "Yuki", "Haruto", "Mei", "Wei", "Aisha", "Omar", "Fatima", "Mateo",
    "Sofía", "José", "Zoë", "Søren", "Łukasz", "Siobhán", "Aoife", "Björn", "Chiara", "Ngozi",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Campbell",
    "Tanaka", "Sato", "Kim", "Patel", "Singh", "Müller", "Schmidt", "O'Brien", "Murphy",
    "Kowalski", "Rossi", "Dubois", "Okafor", "Silva", "Larsen",
)  # fmt: skip

# Only reserved example domains (RFC 2606): if someone points the demo at a real ESP, nothing
# reaches a real mailbox.
_DOMAINS = (
    ("example.com", 30), ("example.net", 20), ("example.org", 15), ("mail.example.com", 15),
    ("inbox.example.net", 10), ("post.example.org", 10),
)  # fmt: skip

# (IANA name, approximate standard UTC offset in minutes, weight). The offset only shapes the
# daily activity curve, so ignoring DST is fine. Non-whole-hour offsets (Kolkata, Kathmandu,
# St John's) and the date-line extremes (Kiritimati, Pago Pago) are included in small numbers
# because "09:00 local on the birthday" is exactly where such zones break naive code.
_TIMEZONES = (
    ("America/New_York", -300, 22), ("America/Chicago", -360, 9), ("America/Denver", -420, 4),
    ("America/Los_Angeles", -480, 14), ("America/Toronto", -300, 3),
    ("America/Sao_Paulo", -180, 3), ("America/Mexico_City", -360, 2),
    ("America/St_Johns", -210, 0.5), ("Pacific/Honolulu", -600, 0.7),
    ("Pacific/Pago_Pago", -660, 0.2), ("Europe/London", 0, 10), ("Europe/Berlin", 60, 7),
    ("Europe/Paris", 60, 4), ("Europe/Madrid", 60, 2), ("Africa/Johannesburg", 120, 1),
    ("Asia/Dubai", 240, 1), ("Asia/Kolkata", 330, 3), ("Asia/Kathmandu", 345, 0.3),
    ("Asia/Singapore", 480, 2), ("Asia/Tokyo", 540, 4), ("Australia/Sydney", 600, 3),
    ("Pacific/Auckland", 720, 1.5), ("Pacific/Kiritimati", 840, 0.2), ("UTC", 0, 3),
)  # fmt: skip
# Values that are not IANA names (none of them is in DuckDB's ``pg_timezone_names()``): the
# kind of thing a hand-rolled profile form or a buggy SDK writes.
BOGUS_TIMEZONES = ("Mars/Olympus", "EST5", "GMT+25", "Europe/Londn", "America/Springfeld")
INVALID_EMAILS = ("not-an-email", "a@b", "", None, "jane.doe@", "@example.com")
UNKNOWN_EVENT_NAMES = ("Product Viewed", "page_viewed", "app_opened", "test_event", "productViewed")
EVENT_NAMES = (
    "signed_up", "product_viewed", "product_added", "product_removed", "cart_viewed",
    "checkout_started", "order_completed", "order_shipped",
)  # fmt: skip
# Most orders ship 6-60 h after they are placed (shipping_notification); the carriers are those
# of the dbt var carrier_tracking_urls, plus one it does not know (no tracking link then).
P_SHIPPED = 0.9
_CARRIERS = ("UPS", "USPS", "FedEx", "DHL", "Parcel Friends")
_CARRIER_WEIGHTS = (4, 3, 2, 1, 1)

# Relative activity per local hour of day (0..23): quiet nights, a lunch bump, an evening peak.
# Real shops see exactly this, and it spreads abandoned carts unevenly over the demo's ticks.
_HOUR_WEIGHT = (
    0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.25, 0.45, 0.6, 0.65, 0.7, 0.75,
    0.85, 0.8, 0.7, 0.7, 0.75, 0.85, 0.95, 1.0, 1.0, 0.9, 0.7, 0.45,
)  # fmt: skip

_PRODUCT_SPECS = (
    ("Classic Crew Tee", 24.00), ("Heavyweight Hoodie", 64.00), ("Slim Chino Pants", 58.00),
    ("Merino Wool Beanie", 29.00), ("Canvas Tote Bag", 19.50), ("Leather Card Wallet", 45.00),
    ("Trail Running Shoes", 129.00), ("Everyday Sneakers", 89.00), ("Wool Socks 3-Pack", 18.00),
    ("Rain Shell Jacket", 149.00), ("Quilted Vest", 98.00), ("Linen Button-Down", 68.00),
    ("Stainless Water Bottle", 32.00), ("Insulated Coffee Mug", 27.50), ("Pour-Over Kettle", 74.00),
    ("Ceramic Dinner Plates (4)", 56.00), ("Cast Iron Skillet", 39.99), ("Chef's Knife 8in", 89.95),
    ("Bamboo Cutting Board", 24.95), ("Linen Napkins (4)", 34.00), ("Scented Soy Candle", 22.00),
    ("Wool Throw Blanket", 119.00), ("Down Pillow", 79.00), ("Percale Sheet Set", 139.00),
    ("Desk Lamp", 84.00), ("Wireless Earbuds", 99.00), ("Phone Case", 29.99),
    ("USB-C Charging Cable", 14.99), ("Laptop Sleeve 14in", 49.00), ("Notebook Dot Grid", 12.50),
    ("Fountain Pen", 38.00), ("Yoga Mat", 68.00), ("Resistance Bands Set", 26.00),
    ("Sunglasses Polarized", 110.00), ("Baseball Cap", 28.00), ("Silk Scarf", 72.00),
    ("Gold Hoop Earrings", 95.00), ("Analog Wrist Watch", 185.00), ("Travel Backpack 30L", 159.00),
    ("Gift Card $50", 50.00),
)  # fmt: skip


@dataclass(frozen=True)
class _Product:
    product_id: str
    name: str
    price: float
    url: str
    image_url: str


# Letters that NFKD does not decompose into ASCII.
_TRANSLIT = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "æ": "ae", "ß": "ss"})


def _slug(text: str) -> str:
    """ASCII, lowercase, hyphen-separated: what a shop would use in URLs and e-mail local parts."""
    folded = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    folded = folded.encode("ascii", "ignore").decode().lower()
    out, dash = [], False
    for ch in folded:
        if ch.isalnum():
            out.append(ch)
            dash = False
        elif not dash and out:
            out.append("-")
            dash = True
    return "".join(out).strip("-")


CATALOGUE: tuple[_Product, ...] = tuple(
    _Product(
        product_id=f"sku_{i + 1:04d}",
        name=name,
        price=price,
        url=f"https://shop.example/products/{_slug(name)}",
        image_url=f"https://cdn.shop.example/images/{_slug(name)}.jpg",
    )
    for i, (name, price) in enumerate(_PRODUCT_SPECS)
)
# Cheap everyday items are viewed far more often than a $185 watch; a mild popularity skew makes
# "top products" in templates and dashboards look plausible.
_PRODUCT_WEIGHTS = tuple(1.0 / (1.0 + p.price / 60.0) for p in CATALOGUE)

# --------------------------------------------------------------------------------------------
# Shape parameters (fractions of customers / carts / events)
# --------------------------------------------------------------------------------------------

P_LAPSED = 0.05  # ordered once 88-100 days ago, silent since -> win-back candidates
P_RETURNING = 0.02  # ordered ~88-130 days ago and came back inside the window -> no win-back
P_NEW = 0.08  # signed up inside the window (gets a signed_up event)
P_ACTIVE = 0.50  # older customers who browse inside the window; the rest are dormant
P_HOT = 0.10  # extra session in the last ~30 h so every demo tick finds newly due carts
P_CART = 0.55  # session adds something to a cart
P_EMPTIED = 0.06  # cart emptied again (added then removed) -> must not get an email
P_CHECKOUT = 0.45  # non-empty cart reaches checkout
P_ORDER = 0.70  # checkout converts -> ~1/3 of carts convert, ~2/3 are abandoned
_SESSIONS_PER_30_DAYS = ((1, 2, 3, 4, 6), (40, 28, 16, 10, 6))  # (count, weight)
P_RESUME_CART = 0.30  # a later session continues the customer's open cart (moves last activity)
P_BAD = 0.005  # each kind of planted bad event row, as a fraction of ordinary events

P_TZ_NULL, P_TZ_BOGUS = 0.03, 0.01
P_BIRTHDAY_NULL = 0.15
P_EMAIL_INVALID, P_EMAIL_MESSY, P_EMAIL_DUPLICATE = 0.01, 0.04, 0.005
P_FIRST_NAME_MISSING = 0.01
P_NO_CONSENT, P_UNSUBSCRIBED, P_RESUBSCRIBED = 0.05, 0.10, 0.01
P_PENDING, P_PENDING_DAYS = 0.15, 4

# --------------------------------------------------------------------------------------------
# DDL (the public contract)
# --------------------------------------------------------------------------------------------

# ``{name}``: the table is built as ``raw.__nudge_demo_<table>`` and renamed when complete.
_DDL = {
    "customers": """
        create table raw.{name} (
            customer_id varchar, email varchar, first_name varchar, timezone varchar,
            birthday date, created_at timestamptz
        )""",
    "events": """
        create table raw.{name} (
            event_id varchar, customer_id varchar, event_name varchar,
            occurred_at timestamptz, properties varchar
        )""",
    "subscriptions": """
        create table raw.{name} (
            customer_id varchar, list varchar, status varchar, changed_at timestamptz
        )""",
}


def _to_us(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


# --------------------------------------------------------------------------------------------
# Generator state
# --------------------------------------------------------------------------------------------


@dataclass
class _Cart:
    cart_id: str
    items: dict[int, int] = field(default_factory=dict)  # catalogue index -> quantity


# Events per chunk written to DuckDB: ~60 MB of Python objects, and few enough inserts.
CHUNK_ROWS = 200_000


class _EventStream:
    """raw.events, written in chunks as the generator goes: memory stays flat as history grows.

    The rows of one chunk are buffered as column lists (appending to lists is the fastest
    pure-Python path), then handed to ``write`` as an Arrow table. Per row written, it keeps
    only two small numbers: the length of ``properties`` (planting a malformed copy draws a cut
    within it, so the random stream depends on it) and the first byte of ``event_id`` (to check
    that a row read back by its position is the row that was written there).
    """

    def __init__(self, write: Callable[[pa.Table], None]) -> None:
        self._write = write
        self.written = 0
        self.props_len = array("H")  # a payload over 65,535 characters fails loudly
        self.id_byte = array("B")
        self._clear()

    def _clear(self) -> None:
        self.event_id: list[str] = []
        self.customer_id: list[str | None] = []
        self.event_name: list[str] = []
        self.occurred_at: list[int] = []
        self.properties: list[str | None] = []

    def __len__(self) -> int:
        return self.written + len(self.event_id)

    def add(self, eid: str, cid: str | None, name: str, t: int, props: str | None) -> None:
        self.event_id.append(eid)
        self.customer_id.append(cid)
        self.event_name.append(name)
        self.occurred_at.append(t)
        self.properties.append(props)
        self.props_len.append(0 if props is None else len(props))
        self.id_byte.append(int(eid[:2], 16))
        if len(self.event_id) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.event_id:
            return
        self._write(
            pa.table(
                {
                    "event_id": pa.array(self.event_id, pa.string()),
                    "customer_id": pa.array(self.customer_id, pa.string()),
                    "event_name": pa.array(self.event_name, pa.string()),
                    "occurred_at": _ts(self.occurred_at),
                    "properties": pa.array(self.properties, pa.string()),
                }
            )
        )
        self.written += len(self.event_id)
        self._clear()


_Row = tuple[str, str | None, str, int, str | None]


class _Eligible(Sequence[int]):
    """Positions ``0 .. n-1`` minus the protected ranges, as a sequence ``random.choice`` takes.

    The same draws as a list of the positions would give (``choice`` indexes ``seq[randbelow(
    len(seq))]``), in a few numbers per protected customer instead of one per event.
    """

    def __init__(self, n: int, protected: Sequence[tuple[int, int]]) -> None:
        self._offsets = array("q")  # eligible index of each kept segment's first position
        self._starts = array("q")  # that segment's first position
        kept, pos = 0, 0
        for lo, hi in [*protected, (n, n)]:
            if lo > pos:
                self._offsets.append(kept)
                self._starts.append(pos)
                kept += lo - pos
            pos = max(pos, hi)
        self._len = kept

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, j: int) -> int: ...
    @overload
    def __getitem__(self, j: slice) -> Sequence[int]: ...
    def __getitem__(self, j: int | slice) -> int | Sequence[int]:
        if isinstance(j, slice):
            raise TypeError("slicing is not supported")
        if not 0 <= j < self._len:
            raise IndexError(j)
        seg = bisect_right(self._offsets, j) - 1
        return self._starts[seg] + (j - self._offsets[seg])


class _Generator:
    """Holds the RNG and the window bounds; every random draw goes through ``self.rng``."""

    def __init__(
        self,
        *,
        customers: int,
        end_us: int,
        days: int,
        seed: int,
        write: Callable[[pa.Table], None],
    ) -> None:
        self.rng = random.Random(seed)
        self.n = customers
        self.end = end_us
        self.start = end_us - days * DAY
        self.days = days
        self.ev = _EventStream(write)
        # Customers whose history must stay clean (lapsed), and the positions of their events:
        # bad rows never copy them, so "ordered 88-100 days ago and nothing since" holds exactly.
        self.protected: set[str] = set()
        self.protected_rows: list[tuple[int, int]] = []
        self._product_idx = list(range(len(CATALOGUE)))
        # Shipments draw from their own stream, so adding them left every other event (and the
        # demo's figures) exactly as it was.
        self.ship_rng = random.Random(seed + 7919)

    # -- ids ---------------------------------------------------------------------------------

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"

    def short_id(self, prefix: str) -> str:
        return f"{prefix}_{self.rng.getrandbits(64):016x}"

    # -- time --------------------------------------------------------------------------------

    def session_start(self, lo: int, hi: int, offset_min: int) -> int:
        """Uniform in [lo, hi) thinned by the local hour-of-day curve (rejection sampling)."""
        rng = self.rng
        span = max(hi - lo, 1)
        for _ in range(20):
            t = lo + int(rng.random() * span)
            hour = ((t // MINUTE + offset_min) // 60) % 24
            if rng.random() < _HOUR_WEIGHT[hour]:
                return t
        return t

    def gap(self, lo_s: float, hi_s: float) -> int:
        return int(self.rng.uniform(lo_s, hi_s) * US)

    # -- events ------------------------------------------------------------------------------

    def emit(self, cid: str | None, name: str, t: int, props: dict[str, object]) -> None:
        # Ordinary events never lie in the future: clock skew is planted separately.
        if t <= self.end:
            self.ev.add(self.uuid(), cid, name, t, json.dumps(props))

    @staticmethod
    def _product_props(p: _Product, quantity: int | None = None) -> dict[str, object]:
        d: dict[str, object] = {
            "product_id": p.product_id,
            "name": p.name,
            "price": p.price,
        }
        if quantity is not None:
            d["quantity"] = quantity
        d["url"] = p.url
        d["image_url"] = p.image_url
        return d

    def _cart_products(self, cart: _Cart) -> tuple[list[dict[str, object]], float]:
        products = [self._product_props(CATALOGUE[i], q) for i, q in cart.items.items()]
        # Sum in cents so that revenue == sum(price * quantity) exactly after rounding.
        cents = sum(round(CATALOGUE[i].price * 100) * q for i, q in cart.items.items())
        return products, cents / 100

    def session(
        self,
        cid: str,
        t: int,
        open_carts: dict[str, _Cart],
        *,
        force_order: bool = False,
    ) -> int:
        """One browsing session starting at ``t``; returns the instant it ends.

        Views first, then maybe a cart (new, or the customer's still-open one resumed, which
        moves that cart's last activity), maybe removals (sometimes all items: an emptied cart),
        maybe checkout and an order a few minutes later. ``force_order`` is used for the lapsed
        and returning customers' historic purchase, which must exist.
        """
        rng = self.rng
        n_views = rng.choices((1, 2, 3, 4, 5, 6), (25, 25, 20, 14, 9, 7))[0]
        viewed = rng.choices(self._product_idx, _PRODUCT_WEIGHTS, k=n_views)
        for i in viewed:
            self.emit(cid, "product_viewed", t, self._product_props(CATALOGUE[i]))
            t += self.gap(15, 240)
        if not (force_order or rng.random() < P_CART):
            return t

        cart = open_carts.get(cid)
        if cart is None or force_order or rng.random() >= P_RESUME_CART:
            cart = _Cart(self.short_id("cart"))
        open_carts[cid] = cart
        n_add = rng.randint(1, min(3, len(viewed)))
        for i in viewed[:n_add]:
            qty = rng.choices((1, 2, 3), (82, 13, 5))[0]
            cart.items[i] = cart.items.get(i, 0) + qty
            props = {"cart_id": cart.cart_id, **self._product_props(CATALOGUE[i], qty)}
            self.emit(cid, "product_added", t, props)
            t += self.gap(10, 180)

        r = 1.0 if force_order else rng.random()
        if r < P_EMPTIED:
            removals = list(cart.items)
        elif r < 3 * P_EMPTIED and len(cart.items) > 1:
            removals = [rng.choice(list(cart.items))]
        else:
            removals = []
        for i in removals:
            props = {"cart_id": cart.cart_id, **self._product_props(CATALOGUE[i], cart.items[i])}
            self.emit(cid, "product_removed", t, props)
            del cart.items[i]
            t += self.gap(5, 90)

        if rng.random() < 0.6 or not cart.items:
            products, _ = self._cart_products(cart)
            props = {"cart_id": cart.cart_id, "products": products}
            self.emit(cid, "cart_viewed", t, props)
            t += self.gap(10, 120)
        if not cart.items:
            del open_carts[cid]  # emptied: nothing left to remind anyone about
            return t
        if not (force_order or rng.random() < P_CHECKOUT):
            return t

        products, value = self._cart_products(cart)
        checkout = {"cart_id": cart.cart_id, "revenue": value, "currency": "USD"}
        self.emit(cid, "checkout_started", t, {**checkout, "products": products})
        t += self.gap(60, 900)
        if not (force_order or rng.random() < P_ORDER):
            return t
        order = {"order_id": self.short_id("ord"), **checkout, "products": products}
        self.emit(cid, "order_completed", t, order)
        self.ship(cid, str(order["order_id"]), t)
        del open_carts[cid]
        return t

    def ship(self, cid: str, order_id: str, ordered_at: int) -> None:
        """The order's order_shipped event (carrier, tracking number), unless it is after end."""
        rng = self.ship_rng
        if rng.random() >= P_SHIPPED:
            return
        t = ordered_at + int(rng.uniform(6 * 3600, 60 * 3600) * US)
        carrier = rng.choices(_CARRIERS, _CARRIER_WEIGHTS)[0]
        number = f"{rng.getrandbits(48):012X}"
        if t <= self.end:
            props = {"order_id": order_id, "carrier": carrier, "tracking_number": number}
            h = f"{rng.getrandbits(128):032x}"
            event_id = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
            self.ev.add(event_id, cid, "order_shipped", t, json.dumps(props))

    # -- customers ---------------------------------------------------------------------------

    def customers(self) -> tuple[dict[str, list], list[str], list[int], list[int]]:
        """Customer rows plus (role, created_at, tz offset) used by the event generator.

        Roles: ``lapsed`` / ``returning`` / ``new`` / ``active`` / ``dormant``. Dormant customers
        have no events at all, which is normal for a shop (most of the list is quiet) and only
        makes them eligible for birthday emails.
        """
        rng, n, end = self.rng, self.n, self.end
        ids = [f"cus_{i + 1:07d}" for i in range(n)]
        roles: list[str] = []
        created: list[int] = []
        two_years = 730 * DAY
        for _ in range(n):
            u = rng.random()
            if u < P_LAPSED:
                role, lo, hi = "lapsed", end - two_years, end - 101 * DAY
            elif u < P_LAPSED + P_RETURNING:
                role, lo, hi = "returning", end - two_years, end - 131 * DAY
            elif u < P_LAPSED + P_RETURNING + P_NEW:
                role, lo, hi = "new", self.start, end - HOUR
            elif u < P_LAPSED + P_RETURNING + P_NEW + P_ACTIVE:
                role, lo, hi = "active", end - two_years, self.start
            else:
                role, lo, hi = "dormant", end - two_years, end - HOUR
            roles.append(role)
            created.append(lo + int(rng.random() * (hi - lo)))

        tz_names = [z[0] for z in _TIMEZONES]
        tz_off = {z[0]: z[1] for z in _TIMEZONES}
        true_tzs = rng.choices(tz_names, [z[2] for z in _TIMEZONES], k=n)
        offsets = [tz_off[z] for z in true_tzs]  # the *true* offset drives behaviour either way
        tzs: list[str | None] = list(true_tzs)
        k_null, k_bogus = _at_least(n, P_TZ_NULL, 2), _at_least(n, P_TZ_BOGUS, 2)
        for rank, i in enumerate(rng.sample(range(n), min(n, k_null + k_bogus))):
            tzs[i] = None if rank < k_null else rng.choice(BOGUS_TIMEZONES)

        firsts: list[str | None] = []
        emails: list[str | None] = []
        domains, domain_w = [d[0] for d in _DOMAINS], [d[1] for d in _DOMAINS]
        for i in range(n):
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            # The running number makes addresses unique, so every duplicate below is deliberate.
            local = f"{_slug(first)}.{_slug(last).replace('-', '')}{i + 1}"
            emails.append(f"{local}@{rng.choices(domains, domain_w)[0]}")
            u = rng.random()
            if u < P_FIRST_NAME_MISSING:
                firsts.append(rng.choice((None, "", "  ")))
            elif u < 2 * P_FIRST_NAME_MISSING:
                firsts.append(f" {first} ")
            else:
                firsts.append(first)

        # Messy-but-valid, duplicate-ish and invalid addresses. Valid-after-normalisation ones
        # test that staging trims and lowercases; duplicates (same person, two accounts) test
        # that one address never gets the same email twice; invalid ones must be skipped.
        # Counts are fixed (not per-row coin flips) so even a tiny test warehouse has each kind.
        pristine = [e or "" for e in emails]
        k_inv, k_dup = _at_least(n, P_EMAIL_INVALID, 2), _at_least(n, P_EMAIL_DUPLICATE, 2)
        k_messy = _at_least(n, P_EMAIL_MESSY, 2)
        picked = rng.sample(range(n), min(n, k_inv + k_dup + k_messy))
        for rank, i in enumerate(picked):
            if rank < k_inv:
                emails[i] = rng.choice(INVALID_EMAILS)
            elif rank < k_inv + k_dup:
                src = pristine[rng.randrange(n)]
                emails[i] = _messy_email(rng, src) if src != pristine[i] else src
            else:
                emails[i] = _messy_email(rng, pristine[i])

        birthdays = self._birthdays(offsets)
        cols: dict[str, list[Any]] = {
            "customer_id": ids,
            "email": emails,
            "first_name": firsts,
            "timezone": tzs,
            "birthday": birthdays,
            "created_at": created,
        }
        return cols, roles, created, offsets

    def _birthdays(self, offsets: Sequence[int]) -> list[int | None]:
        """Days since epoch (or None). Uniform over the calendar, plus planted edge cases.

        ~15 % unknown (optional form field). A few customers are born on 29 February, and a few
        on ``end``'s date and the days either side, so the demo day always has birthdays to
        send and time zones on both sides of the date line matter.
        """
        rng, n = self.rng, self.n
        end_date = (_EPOCH + timedelta(microseconds=self.end)).date()
        out: list[int | None] = []
        for _ in range(n):
            if rng.random() < P_BIRTHDAY_NULL:
                out.append(None)
                continue
            year = rng.randint(1950, 2007)
            first = date(year, 1, 1).toordinal()
            length = 366 if _is_leap(year) else 365
            out.append(first + rng.randrange(length) - _EPOCH_ORDINAL)
        if n == 0:
            return out
        k = max(2, n // 500)
        for _ in range(k):  # 29 February
            out[rng.randrange(n)] = _birthday_on(rng, 2, 29)
        for delta in (-1, 0, 0, 1):  # end's date twice as often as its neighbours
            d = end_date + timedelta(days=delta)
            for _ in range(max(2, n // 400)):
                out[rng.randrange(n)] = _birthday_on(rng, d.month, d.day)
        return out


def _at_least(n: int, fraction: float, minimum: int) -> int:
    """``fraction`` of ``n`` rounded, but at least ``minimum`` (capped at ``n``)."""
    return min(n, max(minimum, round(fraction * n)))


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _birthday_on(rng: random.Random, month: int, day: int) -> int:
    years = [y for y in range(1950, 2008) if month != 2 or day != 29 or _is_leap(y)]
    return date(rng.choice(years), month, day).toordinal() - _EPOCH_ORDINAL


def _messy_email(rng: random.Random, email: str) -> str:
    """Same address as typed by a human or an old import: odd case and stray whitespace."""
    local, _, domain = email.partition("@")
    style = rng.randrange(4)
    if style == 0:
        return f"{local.capitalize()}@{domain.capitalize()}"
    if style == 1:
        return email.upper()
    if style == 2:
        return f"  {email} "
    return f"{local.title()}@{domain}\t"


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


def _build_events(
    g: _Generator, ids: list[str], roles: list[str], created: list[int], offsets: list[int]
) -> None:
    rng, end, start = g.rng, g.end, g.start
    # A customer's open cart; only their own later sessions read it, so it is dropped when the
    # generator moves on to the next customer (memory stays flat).
    open_carts: dict[str, _Cart] = {}
    hot_lo = end - 30 * HOUR
    # The 1-6 sessions are drawn per ~30 days of window, so a longer history holds more events
    # (the 50M-event benchmark is a longer history), and a 30-day window is what it always was.
    blocks = max(1, round(g.days / 30))
    for cid, role, created_at, off in zip(ids, roles, created, offsets, strict=True):
        open_carts.clear()
        if role == "dormant":
            continue
        if role == "lapsed":
            first_row = len(g.ev)
            # Last activity 88-100 days ago, a third of them in the 90-91 day band, so the
            # 90-day mark of several customers passes during the demo day. Those 97-100 days
            # ago are already outside the 7-day grace and must *not* be mailed; those 88-90
            # days ago are not due yet. All three cases are useful.
            g.protected.add(cid)
            if rng.random() < 1 / 3:
                lo, hi = end - 91 * DAY, end - 90 * DAY - HOUR
            else:
                lo, hi = end - 100 * DAY, end - 88 * DAY - HOUR  # a session lasts < 1 h
            last = lo + int(rng.random() * (hi - lo))
            if rng.random() < 0.4:  # an earlier look around in the same fortnight
                prev = last - int(rng.uniform(1, 5) * DAY)
                g.session(cid, max(prev, end - 100 * DAY), open_carts)
            g.session(cid, last, open_carts, force_order=True)
            g.protected_rows.append((first_row, len(g.ev)))
            continue
        if role == "returning":
            # Ordered ~3-4 months ago, then came back inside the window: their last event is
            # recent, so a correct win-back model leaves them alone.
            old = end - int(rng.uniform(88, 130) * DAY)
            g.session(cid, old, open_carts, force_order=True)
            t0 = g.session_start(max(start, end - 10 * DAY), end, off)
            g.session(cid, t0, open_carts)
            continue

        lo = start
        if role == "new":
            lo = created_at
            g.emit(cid, "signed_up", created_at, {"source": rng.choice(("web", "ios", "android"))})
            if rng.random() < 0.3:  # many sign-ups never browse afterwards
                continue
        n_sessions = sum(rng.choices(*_SESSIONS_PER_30_DAYS)[0] for _ in range(blocks))
        starts = sorted(g.session_start(lo, end, off) for _ in range(n_sessions))
        if rng.random() < P_HOT and hot_lo > lo:
            starts.append(g.session_start(hot_lo, end, off))
        for t0 in sorted(starts):
            g.session(cid, t0, open_carts)


def _plant_bad_events(
    g: _Generator, ids: list[str], read_rows: Callable[[Sequence[int]], dict[int, _Row]]
) -> dict[str, int]:
    """Append deliberately broken rows, ~0.5 % of ordinary events each. Returns counts.

    * exact duplicate rows (same ``event_id``): at-least-once delivery from the collector;
    * ``customer_id`` null: anonymous visitors (Segment track calls before identify);
    * malformed JSON in ``properties`` (truncated payloads, Python dict repr, empty string),
      copied from real events at the same instant so they never change what "last activity" is;
    * ``occurred_at`` minutes to 3 days after ``end``: device clocks that run fast;
    * unknown event names (Title Case from an old SDK, page views, test events).

    None of them touches lapsed customers, whose history must stay exactly "one order 88-100
    days ago and nothing since".

    The ordinary events are already written, so the rows to copy are drawn by position first
    (the draws need only each row's ``properties`` length, kept by the stream) and then read back
    in one query through ``read_rows``.
    """
    rng, ev = g.rng, g.ev
    n_ok = len(ev)
    k = max(1, round(P_BAD * n_ok))
    eligible = _Eligible(n_ok, g.protected_rows)
    if not eligible:
        return {}
    counts: dict[str, int] = {}

    duplicates = [rng.choice(eligible) for _ in range(k)]
    counts["duplicate"] = k

    anonymous: list[_Row] = []
    for _ in range(k):  # anonymous product views
        p = CATALOGUE[rng.randrange(len(CATALOGUE))]
        t = g.start + int(rng.random() * (g.end - g.start))
        anonymous.append((g.uuid(), None, "product_viewed", t, json.dumps(g._product_props(p))))
    counts["null_customer"] = k

    malformed: list[tuple[int, int, int, str]] = []  # (position, style, cut, event_id)
    for _ in range(k):
        i = rng.choice(eligible)
        style, cut = rng.randrange(4), 0
        if style <= 1:
            cut = rng.randint(1, max(1, ev.props_len[i] - 2))
        malformed.append((i, style, cut, g.uuid()))
    counts["malformed_json"] = k

    future: list[tuple[int, int, str]] = []  # clock skew: (position, instant after end, id)
    for _ in range(k):
        i = rng.choice(eligible)
        t = g.end + int(rng.uniform(60, 3 * 86_400) * US)
        future.append((i, t, g.uuid()))
    counts["future"] = k

    unprotected = [c for c in ids if c not in g.protected] or ids
    unknown: list[_Row] = []
    for _ in range(k):  # unknown event names
        who = rng.choice(unprotected)
        t = g.start + int(rng.random() * (g.end - g.start))
        unknown_name = rng.choice(UNKNOWN_EVENT_NAMES)
        url = json.dumps({"url": "https://shop.example/"})
        unknown.append((g.uuid(), who, unknown_name, t, url))
    counts["unknown_name"] = k

    rows = read_rows(sorted({*duplicates, *(m[0] for m in malformed), *(f[0] for f in future)}))
    for i in duplicates:
        ev.add(*rows[i])
    for row in anonymous:
        ev.add(*row)
    for i, style, cut, eid in malformed:
        _, cid, name, t, props = rows[i]
        assert props is not None
        if style <= 1:
            bad = props[:cut]
        elif style == 2:
            bad = repr(json.loads(props))  # single quotes, True/None: not JSON
        else:
            bad = ""
        ev.add(eid, cid, name, t, bad)
    for i, t, eid in future:
        _, cid, name, _, props = rows[i]
        ev.add(eid, cid, name, t, props)
    for row in unknown:
        ev.add(*row)
    return counts


# --------------------------------------------------------------------------------------------
# Consent
# --------------------------------------------------------------------------------------------


def _build_subscriptions(g: _Generator, ids: list[str], created: list[int]) -> dict[str, list]:
    """Marketing consent history, one row per change.

    Most customers opt in at sign-up; ~10 % unsubscribe later (a share of them during the demo
    day, so a cart abandoned in the morning must not be mailed after an afternoon opt-out);
    ~5 % never gave consent (imported customers: no row, no marketing email); ~15 % of those who
    signed up in the last 4 days have not confirmed yet (`pending`, double opt-in); ~1 %
    unsubscribe and then subscribe again, so "latest row wins" is the only correct reading.
    """
    rng, end = g.rng, g.end
    cid_col: list[str] = []
    status: list[str] = []
    changed: list[int] = []

    def add(cid: str, st: str, t: int) -> None:
        cid_col.append(cid)
        status.append(st)
        changed.append(t)

    for cid, c in zip(ids, created, strict=True):
        u = rng.random()
        if c >= end - P_PENDING_DAYS * DAY and u < P_PENDING:
            # Signed up in the last days without confirming yet (double opt-in pending): they
            # get confirm_subscription's email, and no marketing until they confirm.
            add(cid, "pending", c)
            continue
        if u < P_NO_CONSENT:
            continue
        add(cid, "subscribed", c)
        if u < P_NO_CONSENT + P_UNSUBSCRIBED + P_RESUBSCRIBED:
            if rng.random() < 0.1:
                t_unsub = end - int(rng.random() * DAY)
            else:
                t_unsub = c + int(rng.random() * (end - c))
            t_unsub = max(t_unsub, c + MINUTE)
            add(cid, "unsubscribed", t_unsub)
            if u >= P_NO_CONSENT + P_UNSUBSCRIBED and t_unsub < end - MINUTE:
                add(cid, "subscribed", t_unsub + int(rng.random() * (end - t_unsub)))
    return {
        "customer_id": cid_col,
        "list": ["marketing"] * len(cid_col),
        "status": status,
        "changed_at": changed,
    }


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_TS = pa.timestamp("us", tz="UTC")


def _ts(micros: list[int]) -> pa.Array:
    """Timestamps truncated to milliseconds, the precision Segment-style collectors emit."""
    return pa.array([t - t % 1000 for t in micros], _TS)


_STAGED = "__nudge_demo_{}"


def _insert(con: duckdb.DuckDBPyConnection, table: str, arrow: pa.Table) -> None:
    """Append to the staged ``table``; each call commits on its own."""
    view = f"__nudge_demo_{table}_chunk"
    con.register(view, arrow)
    try:
        cols = ", ".join(arrow.column_names)
        con.execute(f"insert into raw.{_STAGED.format(table)} ({cols}) select {cols} from {view}")
    finally:
        con.unregister(view)


def _events_reader(
    con: duckdb.DuckDBPyConnection, ev: _EventStream
) -> Callable[[Sequence[int]], dict[int, _Row]]:
    """Read written events back by position, checking each against what was written there."""

    def read(positions: Sequence[int]) -> dict[int, _Row]:
        n, first, last = con.execute(sql("demo/events_written")).fetchall()[0]
        if n != ev.written or (n and (first, last) != (0, n - 1)):
            raise RuntimeError(f"the staged events hold {n} rows, not the {ev.written} written")
        con.register("__nudge_demo_wanted", pa.table({"position": pa.array(positions, pa.int64())}))
        try:
            fetched = con.execute(sql("demo/events_at")).fetchall()
        finally:
            con.unregister("__nudge_demo_wanted")
        rows: dict[int, _Row] = {}
        for i, eid, cid, name, t, props in fetched:
            if ev.id_byte[i] != int(eid[:2], 16) or ev.props_len[i] != len(props or ""):
                raise RuntimeError(f"staged event {i} is not the row the generator wrote there")
            rows[i] = (eid, cid, name, t, props)
        if len(rows) != len(positions):
            raise RuntimeError("the staged events lost rows the generator wrote")
        return rows

    return read


def generate_demo_warehouse(
    con: duckdb.DuckDBPyConnection,
    *,
    customers: int = 3000,
    end: datetime,
    days: int = 30,
    seed: int = 7,
) -> dict[str, int]:
    """(Re)create ``raw.customers``, ``raw.events`` and ``raw.subscriptions`` with demo data.

    ``end`` must be timezone-aware; it is the latest instant of ordinary data (only the planted
    clock-skewed rows lie after it). ``days`` is the browsing window before ``end``; lapsed
    customers' history lies 88-100 days back regardless. Returns row counts per table.

    Events stream to DuckDB in chunks as they are generated, each chunk committed, so memory
    grows with the number of customers, not with the length of their history (one transaction
    for them all kept every row in memory until the commit). They go to staging tables
    (``raw.__nudge_demo_*``) that replace the three tables in one transaction at the end: a
    failure leaves the previous tables as they were.
    """
    if end.tzinfo is None or end.utcoffset() is None:
        raise ValueError("end must be timezone-aware (UTC)")
    if customers < 0 or days < 1:
        raise ValueError("customers must be >= 0 and days >= 1")
    end_us = _to_us(end.astimezone(UTC))
    end_us -= end_us % 1000  # stored timestamps have millisecond precision

    con.execute("create schema if not exists raw")
    try:
        for table, ddl in _DDL.items():
            con.execute(f"drop table if exists raw.{_STAGED.format(table)}")
            con.execute(ddl.format(name=_STAGED.format(table)))
        g = _Generator(
            customers=customers,
            end_us=end_us,
            days=days,
            seed=seed,
            write=lambda chunk: _insert(con, "events", chunk),
        )
        cust, roles, created, offsets = g.customers()
        ids = cust["customer_id"]
        _build_events(g, ids, roles, created, offsets)
        g.ev.flush()
        if len(g.ev):
            _plant_bad_events(g, ids, _events_reader(con, g.ev))
        g.ev.flush()
        subs = _build_subscriptions(g, ids, created)
        customers_tbl = pa.table(
            {
                "customer_id": pa.array(cust["customer_id"], pa.string()),
                "email": pa.array(cust["email"], pa.string()),
                "first_name": pa.array(cust["first_name"], pa.string()),
                "timezone": pa.array(cust["timezone"], pa.string()),
                "birthday": pa.array(cust["birthday"], pa.date32()),
                "created_at": _ts(cust["created_at"]),
            }
        )
        subs_tbl = pa.table(
            {
                "customer_id": pa.array(subs["customer_id"], pa.string()),
                "list": pa.array(subs["list"], pa.string()),
                "status": pa.array(subs["status"], pa.string()),
                "changed_at": _ts(subs["changed_at"]),
            }
        )
        _insert(con, "customers", customers_tbl)
        _insert(con, "subscriptions", subs_tbl)
        con.execute("begin transaction")
        try:
            for table in _DDL:
                con.execute(f"drop table if exists raw.{table}")
                con.execute(f"alter table raw.{_STAGED.format(table)} rename to {table}")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    except BaseException:
        for table in _DDL:
            con.execute(f"drop table if exists raw.{_STAGED.format(table)}")
        raise
    return {
        "customers": customers_tbl.num_rows,
        "events": len(g.ev),
        "subscriptions": subs_tbl.num_rows,
    }


def generate_to_file(
    path: Path,
    *,
    customers: int,
    end: datetime,
    days: int = 30,
    seed: int = 7,
) -> dict[str, int]:
    """Generate into the DuckDB file at ``path`` (parent dirs created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    # DuckDB keeps the blocks it writes cached up to its limit (80 % of RAM by default), which
    # at 50M events is the whole table; the load never reads them again, so a small cache
    # keeps the generator's memory flat as the history grows.
    con.execute("set memory_limit = '512MB'")
    try:
        return generate_demo_warehouse(con, customers=customers, end=end, days=days, seed=seed)
    finally:
        con.close()
