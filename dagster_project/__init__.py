"""nudge: warehouse-native event-triggered email sequences (dbt decides who, Dagster sends)."""

__version__ = "0.1.0"
