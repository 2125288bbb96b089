"""The demo's shoppers: after each simulated tick, some of the people it touched place orders.

The demo's warehouse is generated before its ticks run, so nothing in it answers an email. To
show what the reporting measures (attribution, holdout lift), the people a tick touched order
now and then in the days after: a held-out customer or a recipient who did not click at the
baseline rate, a recipient who clicked far more often. The orders are appended to
``raw.events`` as the shop's pipeline would, dated after the tick and no later than the demo's
last tick, so later ticks and the reporting models see them (and an ordered cart exits its
sequence). Deterministic per send_id, so a rerun of the demo orders the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .config import Settings
from .demo_events import is_clicked
from .warehouse import locked_warehouse, sql_for

Basket = tuple[list[Any], float | None]

# Chances of an order within the window after a touch, in ten-thousandths.
BASELINE = 400  # 4 %: held out, or received without clicking (what they would do anyway)
RECEIVED = 700  # 7 %: received and did not click (the email still reminds)
CLICKED = 3500  # 35 %: clicked through
MAX_HOURS = 36  # orders come within a day and a half of the touch (inside the 5-day window)
MAX_BASKETS = 500  # the first orders' baskets (by event id) are the shoppers' choice


@dataclass(frozen=True)
class Orders:
    placed: int  # orders appended to raw.events by this tick's shoppers
    after_holdout: int  # of them, by customers held out of the send


def _draw(send_id: str, salt: str, modulo: int = 10000) -> int:
    return int(hashlib.sha256(f"{salt}:{send_id}".encode()).hexdigest()[:8], 16) % modulo


def shoppers_respond(settings: Settings, as_of: datetime, end: datetime) -> Orders:
    """Append the orders of the people the tick at ``as_of`` touched, dated up to ``end``."""
    rows: list[dict[str, object]] = []
    after_holdout = 0
    with locked_warehouse(settings) as con:
        touched = con.execute(
            sql_for(con, "reports/demo_touched_at_tick"), {"as_of": as_of}
        ).fetchall()
        baskets = _baskets(con.execute(sql_for(con, "reports/demo_orders")).fetchall())
        if not baskets:
            return Orders(0, 0)
        for send_id, customer_id, status, cart_id in touched:
            if status == "holdout":
                chance = BASELINE
            else:
                chance = CLICKED if is_clicked(send_id) else RECEIVED
            if _draw(send_id, "order") >= chance:
                continue
            at = as_of + timedelta(minutes=30 + _draw(send_id, "when", MAX_HOURS * 60))
            if at > end:
                continue  # after the demo's last tick: outside the world it shows
            products, revenue = baskets[_draw(send_id, "basket", len(baskets))]
            order = {
                "order_id": "ord-" + hashlib.sha256(f"order:{send_id}".encode()).hexdigest()[:12],
                "revenue": revenue,
                "currency": "USD",
                "products": products,
            }
            if cart_id:
                order["cart_id"] = cart_id
            rows.append(
                {
                    "event_id": f"demo-order:{send_id}",
                    "customer_id": str(customer_id),
                    "occurred_at": at,
                    "properties": json.dumps(order),
                }
            )
            after_holdout += status == "holdout"
        for row in rows:
            con.execute(sql_for(con, "reports/demo_insert_order"), row)
    return Orders(len(rows), after_holdout)


def _baskets(orders: list[tuple[str, str | None]]) -> list[Basket]:
    """The baskets of well-formed orders ``(event_id, properties)``, by event id (code point
    order, whatever the database's collation), the first ``MAX_BASKETS``: a JSON
    object with a ``products`` list, and its ``revenue`` as a number where it reads as one."""
    baskets: list[Basket] = []
    for _, properties in sorted(orders, key=lambda order: order[0]):
        try:
            document = json.loads(properties or "")
        except ValueError:
            continue
        if not isinstance(document, dict) or not isinstance(document.get("products"), list):
            continue
        baskets.append((document["products"], _number(document.get("revenue"))))
        if len(baskets) == MAX_BASKETS:
            break
    return baskets


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
