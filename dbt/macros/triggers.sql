{#- The triggers of one category (marketing / transactional), from their YAML
    (`config.meta.nudge.category`, marketing when unsaid), as a SQL list of quoted names for
    `trigger in (...)`. Read from the graph, so it is only known when dbt executes. -#}
{% macro nudge_triggers_in_category(category) -%}
    {%- set names = [] -%}
    {%- if execute -%}
        {%- for node in (graph.get('nodes') or {}).values() if node.resource_type == 'model' -%}
            {%- set meta = (node.config.meta or {}).get('nudge') or (node.meta or {}).get('nudge') -%}
            {%- if meta and meta.get('steps') and meta.get('category', 'marketing') == category -%}
                {%- do names.append(node.name) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- if names -%}
        {%- for name in names | sort -%}'{{ name }}'{{ ", " if not loop.last }}{%- endfor -%}
    {%- else -%}
        cast(null as varchar)
    {%- endif -%}
{%- endmacro %}
