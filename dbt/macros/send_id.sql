{#- A send's identity: the same (trigger, trigger_key, step) gives the same id on every run, which
    is what lets the ledger recognise a send it already made. Python mirrors this in
    dagster_project/ledger.py::send_id (a test keeps the two equal). -#}
{% macro send_id(trigger, trigger_key, step) -%}
    md5({{ trigger }} || '|' || {{ trigger_key }} || '|' || {{ step }})
{%- endmacro %}
