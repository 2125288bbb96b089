"""Python mirrors of the dbt macros' deterministic draws, to plant test data in known buckets.

nudge computes these only in SQL (``dbt/macros/sequence.sql``, ``dbt/macros/send_id.sql``);
tests need to know in advance which customer falls in a holdout or which variant a send gets.
``tests/test_sequences.py`` checks each mirror against the SQL it mirrors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from dagster_project.sequences import Variant


def send_id(trigger: str, trigger_key: str, step: str) -> str:
    """The id the dbt macro ``send_id`` gives (trigger, trigger_key, step)."""
    return hashlib.md5(f"{trigger}|{trigger_key}|{step}".encode()).hexdigest()


def bucket(text: str) -> int:
    """The stable bucket in [0, 10000) the dbt macro ``nudge_bucket`` computes for ``text``."""
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) % 10000


def holdout_bucket(trigger: str, customer_id: str) -> int:
    """The bucket that decides whether a customer is in a trigger's holdout."""
    return bucket(f"{trigger}:{customer_id}")


def variant_for(send_id: str, variants: Sequence[Variant]) -> str | None:
    """The variant the dbt macro assigns to ``send_id``."""
    if not variants:
        return None
    total = sum(v.weight for v in variants)
    draw = bucket(send_id)
    upper = 0
    for variant in variants:
        upper += variant.weight
        if draw * total < upper * 10000:
            return variant.name
    return variants[-1].name
