"""The Dagster glue: nudge's engine as assets, checks, resources, a job and a schedule.

``definitions.py`` (the package root) assembles them; nothing under ``defs/`` is imported by the
engine modules, which never import Dagster.

* ``dbt.py``: the dbt project as assets (one per model, dbt tests as asset checks);
* ``sends.py``: one send asset per trigger, made from the dbt manifest;
* ``checks.py``: the send assets' checks (guards, duplicates, failure rate);
* ``resources.py``: the warehouse, the ESP, the send policy and the tick's clock;
* ``schedules.py``: the tick job and its hourly schedule.
"""
