{#- The few things DuckDB and PostgreSQL spell differently, each behind one dispatched macro
    (`adapter.dispatch`), so the models read the same on both. Everything else in the models is
    SQL both engines share; where a portable spelling costs nothing (`interval '1 hour' * n`,
    `extract(hour from ...)`, a subquery instead of `qualify`) the models use it directly. A
    new engine adds its own `<adapter>__` versions here. -#}

{#- `cast(value as type)`, or null where the value does not convert ("twelve" as a price): a bad
    row is read as missing rather than failing the build. -#}
{% macro nudge_try_cast(value, type) -%}
    {{ return(adapter.dispatch('nudge_try_cast', 'nudge')(value, type)) }}
{%- endmacro %}

{% macro default__nudge_try_cast(value, type) -%}
    try_cast({{ value }} as {{ type }})
{%- endmacro %}

{#- PostgreSQL 15 has no try_cast (16's pg_input_is_valid neither casts): a function per type,
    created by nudge_create_functions before every run, catches the failed cast, and reads
    numbers as DuckDB does (a too large one is null on both). -#}
{% macro postgres__nudge_try_cast(value, type) -%}
    {#- The outer cast keeps the type's modifiers (decimal(18, 2)), which a function's declared
        return type drops. -#}
    cast({{ nudge_function_schema() }}.{{ nudge_try_cast_function(type) }}(cast({{ value }} as text)) as {{ type }})
{%- endmacro %}

{#- The types the models try_cast to, and the PostgreSQL function for each. -#}
{% macro nudge_try_cast_types() -%}
    {{ return(['decimal(18, 2)', 'integer', 'jsonb']) }}
{%- endmacro %}

{% macro nudge_try_cast_function(type) -%}
    {%- if type not in nudge_try_cast_types() -%}
        {{ exceptions.raise_compiler_error(
            "nudge_try_cast: add " ~ type ~ " to nudge_try_cast_types (dbt/macros/dialect.sql)") }}
    {%- endif -%}
    nudge_try_cast_{{ type | replace(', ', '_') | replace('(', '_') | replace(')', '') }}
{%- endmacro %}

{% macro nudge_function_schema() -%}
    {{ target.schema }}
{%- endmacro %}

{#- Run before every dbt invocation (on-run-start): PostgreSQL's helper functions. -#}
{% macro nudge_create_functions() -%}
    {{ return(adapter.dispatch('nudge_create_functions', 'nudge')()) }}
{%- endmacro %}

{% macro default__nudge_create_functions() -%}
    select 1
{%- endmacro %}

{% macro postgres__nudge_create_functions() -%}
    {#- Dates, hours and "a day later" follow the session's time zone on PostgreSQL. DuckDB's
        profile pins UTC; a PostgreSQL server's or role's own zone would shift them, so a
        session in another zone fails here, before any model, with the fix in the message. -#}
    do $$
    begin
        if current_setting('TimeZone') not in ('UTC', 'Etc/UTC', 'GMT', 'Etc/GMT', 'Etc/UCT', 'UCT') then
            raise exception 'nudge needs the session time zone UTC, not %: run  alter role % set timezone = ''UTC''  (or set PGTZ=UTC)',
                current_setting('TimeZone'), current_user;
        end if;
    end
    $$;
    create schema if not exists {{ nudge_function_schema() }};
    {% for type in nudge_try_cast_types() -%}
        create or replace function {{ nudge_function_schema() }}.{{ nudge_try_cast_function(type) }}(value text)
        returns {{ type }} language plpgsql immutable parallel safe as $$
        begin
            {%- if type in ('decimal(18, 2)', 'integer') %}
            -- Numbers as DuckDB reads them: '2.0' and '1e3' are numbers (an integer rounds,
            -- as there), 'NaN' and 'Infinity' are not. (DuckDB also reads 0x1A and 1_000.)
            if value !~ '^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$' then
                return null;
            end if;
            return cast(cast(trim(value) as numeric) as {{ type }});
            {%- else %}
            return cast(value as {{ type }});
            {%- endif %}
        exception when others then
            return null;
        end
        $$;
    {% endfor %}
    -- len() of a list, as DuckDB spells it: step conditions in the triggers' YAML use it.
    create or replace function {{ nudge_function_schema() }}.len(value anyarray)
    returns integer language sql immutable parallel safe as $$ select cardinality(value) $$;
{%- endmacro %}

{#- A JSON document parsed from text, or null where the text is not valid JSON. -#}
{% macro nudge_parse_json(value) -%}
    {{ return(adapter.dispatch('nudge_parse_json', 'nudge')(value)) }}
{%- endmacro %}

{% macro default__nudge_parse_json(value) -%}
    case when json_valid({{ value }}) then cast({{ value }} as json) end
{%- endmacro %}

{% macro postgres__nudge_parse_json(value) -%}
    {{ nudge_try_cast(value, 'jsonb') }}
{%- endmacro %}


{#- Lists of records (a cart's or an order's items): DuckDB keeps a list of structs, PostgreSQL
    a jsonb array of objects; both reach the templates as a list of dicts.
    nudge_agg_records: one record per row, `fields` a dict of name to expression, in order. -#}
{% macro nudge_agg_records(fields, order_by) -%}
    {{ return(adapter.dispatch('nudge_agg_records', 'nudge')(fields, order_by)) }}
{%- endmacro %}

{% macro default__nudge_agg_records(fields, order_by) -%}
    list(
        {
            {%- for name, expression in fields.items() %}
            '{{ name }}': {{ expression }}{{ ',' if not loop.last }}
            {%- endfor %}
        }
        order by {{ order_by }}
    )
{%- endmacro %}

{% macro postgres__nudge_agg_records(fields, order_by) -%}
    jsonb_agg(
        jsonb_build_object(
            {%- for name, expression in fields.items() %}
            '{{ name }}', {{ expression }}{{ ',' if not loop.last }}
            {%- endfor %}
        )
        order by {{ order_by }}
    )
{%- endmacro %}

{#- One row per element of a list (in a select list), and the element's 1-based position in
    it: both in one select, in step. -#}
{% macro nudge_unnest(list) -%}
    {{ return(adapter.dispatch('nudge_unnest', 'nudge')(list)) }}
{%- endmacro %}

{% macro default__nudge_unnest(list) -%}
    unnest({{ list }})
{%- endmacro %}

{% macro postgres__nudge_unnest(list) -%}
    jsonb_array_elements({{ list }})
{%- endmacro %}

{% macro nudge_unnest_position(list) -%}
    {{ return(adapter.dispatch('nudge_unnest_position', 'nudge')(list)) }}
{%- endmacro %}

{% macro default__nudge_unnest_position(list) -%}
    generate_subscripts({{ list }}, 1)
{%- endmacro %}

{% macro postgres__nudge_unnest_position(list) -%}
    generate_series(1, jsonb_array_length({{ list }}))
{%- endmacro %}

{#- A record's field as `type` (a struct field in DuckDB, a jsonb key in PostgreSQL). -#}
{% macro nudge_field(record, name, type) -%}
    {{ return(adapter.dispatch('nudge_field', 'nudge')(record, name, type)) }}
{%- endmacro %}

{% macro default__nudge_field(record, name, type) -%}
    {{ record }}.{{ name }}
{%- endmacro %}

{% macro postgres__nudge_field(record, name, type) -%}
    cast({{ record }} ->> '{{ name }}' as {{ type }})
{%- endmacro %}

{#- A JSON value when it is an array, else null (a string, an object, nothing). -#}
{% macro nudge_json_array(value) -%}
    {{ return(adapter.dispatch('nudge_json_array', 'nudge')(value)) }}
{%- endmacro %}

{% macro default__nudge_json_array(value) -%}
    try_cast({{ value }} as json[])
{%- endmacro %}

{% macro postgres__nudge_json_array(value) -%}
    case when jsonb_typeof({{ value }}) = 'array' then {{ value }} end
{%- endmacro %}

{#- The n-th smallest value of a group (1-based), null when the group has fewer. -#}
{% macro nudge_nth_smallest(value, n) -%}
    {{ return(adapter.dispatch('nudge_nth_smallest', 'nudge')(value, n)) }}
{%- endmacro %}

{% macro default__nudge_nth_smallest(value, n) -%}
    list_sort(list({{ value }}))[{{ n }}]
{%- endmacro %}

{% macro postgres__nudge_nth_smallest(value, n) -%}
    (array_agg({{ value }} order by {{ value }}))[{{ n }}]
{%- endmacro %}

{#- A left join to the earliest `at` of `relation` that `on` admits (its inequality on `at` says
    from when): only that `at` is read from the joined side, null when none. DuckDB's ASOF join
    finds it in one sorted pass; elsewhere a lateral min per row. -#}
{% macro nudge_join_first_at(relation, alias, at, on) -%}
    {{ return(adapter.dispatch('nudge_join_first_at', 'nudge')(relation, alias, at, on)) }}
{%- endmacro %}

{% macro default__nudge_join_first_at(relation, alias, at, on) -%}
    asof left join {{ relation }} as {{ alias }}
        on {{ on }}
{%- endmacro %}

{% macro postgres__nudge_join_first_at(relation, alias, at, on) -%}
    left join lateral (
        select min({{ alias }}.{{ at }}) as {{ at }}
        from {{ relation }} as {{ alias }}
        where {{ on }}
    ) as {{ alias }} on true
{%- endmacro %}

{#- An empty list of records (see nudge_agg_records). -#}
{% macro nudge_no_records() -%}
    {{ return(adapter.dispatch('nudge_no_records', 'nudge')()) }}
{%- endmacro %}

{% macro default__nudge_no_records() -%}
    []
{%- endmacro %}

{% macro postgres__nudge_no_records() -%}
    cast('[]' as jsonb)
{%- endmacro %}

{#- Up to 15 hex digits as a bigint. -#}
{% macro nudge_hex_to_bigint(hex) -%}
    {{ return(adapter.dispatch('nudge_hex_to_bigint', 'nudge')(hex)) }}
{%- endmacro %}

{% macro default__nudge_hex_to_bigint(hex) -%}
    cast(('0x' || {{ hex }}) as bigint)
{%- endmacro %}

{% macro postgres__nudge_hex_to_bigint(hex) -%}
    cast(cast(('x' || lpad({{ hex }}, 16, '0')) as bit(64)) as bigint)
{%- endmacro %}

{#- Lists of plain values (the steps an entry sent, opened, clicked): a DuckDB list, a
    PostgreSQL array. Step conditions read them with len(), which PostgreSQL gets from
    nudge_create_functions. -#}
{% macro nudge_agg_list(value, order_by) -%}
    {{ return(adapter.dispatch('nudge_agg_list', 'nudge')(value, order_by)) }}
{%- endmacro %}

{% macro default__nudge_agg_list(value, order_by) -%}
    list({{ value }} order by {{ order_by }})
{%- endmacro %}

{% macro postgres__nudge_agg_list(value, order_by) -%}
    array_agg({{ value }} order by {{ order_by }})
{%- endmacro %}

{% macro nudge_empty_list() -%}
    {{ return(adapter.dispatch('nudge_empty_list', 'nudge')()) }}
{%- endmacro %}

{% macro default__nudge_empty_list() -%}
    []
{%- endmacro %}

{% macro postgres__nudge_empty_list() -%}
    cast(array[] as varchar[])
{%- endmacro %}

{#- The first row of `relation` per `partition_by`, by `order_by`: a whole `select`. DuckDB's
    QUALIFY is about a third faster than its DISTINCT ON on a million customers; PostgreSQL has
    only DISTINCT ON. Spell `desc nulls last` where a key may be null: DuckDB puts nulls last
    either way, PostgreSQL first when descending. -#}
{% macro nudge_first_per(relation, partition_by, order_by) -%}
    {{ return(adapter.dispatch('nudge_first_per', 'nudge')(relation, partition_by, order_by)) }}
{%- endmacro %}

{% macro default__nudge_first_per(relation, partition_by, order_by) -%}
    select * from {{ relation }}
    qualify row_number() over (partition by {{ partition_by }} order by {{ order_by }}) = 1
{%- endmacro %}

{% macro postgres__nudge_first_per(relation, partition_by, order_by) -%}
    select distinct on ({{ partition_by }}) *
    from {{ relation }}
    order by {{ partition_by }}, {{ order_by }}
{%- endmacro %}
