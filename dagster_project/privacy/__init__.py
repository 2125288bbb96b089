"""A person's data: erasing it (GDPR Article 17), exporting it (Articles 15 and 20), and why
they got (or did not get) an email.

The engine of three operator commands (``cli.py``): ``nudge erase`` (``erase.py``), ``nudge
export`` (``export.py``) and ``nudge why`` (``why.py``). What they share: who a person is, the
warehouse's relations, pseudonyms and address hashes (``people.py``), and reading one
customer's data without writing (``reading.py``).
"""

from .erase import Change, Erasure, erase, format_erasure
from .export import export, to_json
from .people import (
    DBT_SCHEMAS,
    PSEUDONYM_PREFIX,
    RENDER_DIR,
    Person,
    dbt_schemas,
    default_render_dirs,
    erasure_hash,
    pseudonym,
)
from .why import Why, WhyEntry, format_why, why

__all__ = [
    "DBT_SCHEMAS",
    "PSEUDONYM_PREFIX",
    "RENDER_DIR",
    "Change",
    "Erasure",
    "Person",
    "Why",
    "WhyEntry",
    "dbt_schemas",
    "default_render_dirs",
    "erase",
    "erasure_hash",
    "export",
    "format_erasure",
    "format_why",
    "pseudonym",
    "to_json",
    "why",
]
