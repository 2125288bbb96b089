-- Every event the shop's ingestion delivered, typed and parsed once, kept as a table that each tick
-- extends with what arrived since the last one; stg_raw__events reads the first copy of each
-- event as it was at the tick's as_of. Re-deduplicating and re-parsing the whole history every
-- hour was the tick's largest cost at a million customers.
--
-- Incremental: a tick reads the raw events that occurred after the last load's as_of minus the
-- late-arrival window (var events_late_arrival_hours), so an event delivered up to that long after
-- it happened is still picked up, and merges them by event_id. It keeps events dated after as_of
-- (clock skew, a tick replayed earlier): they only become visible in stg_raw__events at their
-- time. An event delivered later than the window, or a raw row the shop deletes or corrects, is
-- seen only by `--full-refresh` (README "Incremental models").
{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}

{#- The load's window, read before the model runs so both bounds reach the scans as literals
    (DuckDB prunes the raw and kept rows by them instead of reading the whole history).

    occurred_after: a late-arrival window before the earliest of the last load's tick instant,
    its wall-clock time, and this tick's instant. The wall clock guards against a tick run ahead
    of time (nudge run --as-of in the future): the events that happen after it still arrive
    later. A tick replayed earlier looks back from its own instant. A full build, or an empty
    table (everything erased), reads everything (-infinity).

    loaded_as_of: never goes back, even when a tick is replayed earlier: the incremental models
    downstream recompute what was loaded at or after their own last instant (macro
    nudge_changed_keys), so a late row must not look older than they are. -#}
{%- set occurred_after = '-infinity' -%}
{%- set loaded_as_of = nudge_as_of_text() -%}
{%- if is_incremental() and execute -%}
    {%- set bounds = run_query(
        "select"
        ~ " cast(greatest(coalesce(max(loaded_as_of), " ~ as_of() ~ "), " ~ as_of() ~ ") as varchar),"
        ~ " cast(case when count(*) > 0 then least(max(loaded_as_of), max(loaded_at), " ~ as_of()
        ~ ") - interval '1 hour' * " ~ (var('events_late_arrival_hours') | int) ~ " end as varchar)"
        ~ " from " ~ this
    ).rows[0] -%}
    {%- set loaded_as_of = bounds[0] -%}
    {%- set occurred_after = bounds[1] or '-infinity' -%}
{%- endif %}

with

source as (

    select * from {{ source('raw', 'events') }}

),

typed as (

    select
        cast(event_id as varchar) as event_id,
        cast(customer_id as varchar) as customer_id,
        lower(trim(event_name)) as event_name,
        cast(occurred_at as timestamptz) as occurred_at,
        cast(properties as varchar) as properties_raw
    from source

),

-- Null keys cannot be attributed: dropped rather than failing the build. Only the window's rows
-- are read on an incremental load.
recent as (

    select * from typed
    where
        event_id is not null
        and customer_id is not null
        and event_name is not null
        and occurred_at is not null
        and occurred_at > cast('{{ occurred_after }}' as timestamptz)

),

-- The window's kept copies: one identical to a new row changes nothing (an identical copy has
-- the kept row's time, so only the window needs comparing). None in a full build. This and
-- kept_copies read {{ this }} each on its own: one CTE shared by both would be materialized whole,
-- the entire history, on every load.
kept_recent as (

    {% if is_incremental() -%}
        select
            event_id,
            customer_id,
            event_name,
            occurred_at,
            properties_raw
        from {{ this }}
        where occurred_at > cast('{{ occurred_after }}' as timestamptz)
    {%- else -%}
        select * from recent
        where false
    {%- endif %}

),

arrived as (

    select recent.*
    from recent
    left join kept_recent
        on
            recent.event_id = kept_recent.event_id
            and recent.customer_id = kept_recent.customer_id
            and recent.event_name = kept_recent.event_name
            and recent.occurred_at = kept_recent.occurred_at
            and recent.properties_raw is not distinct from kept_recent.properties_raw
    where kept_recent.event_id is null

),

-- Every kept copy of the events that arrived, whatever their time (none in a full build).
kept_copies as (

    {% if is_incremental() -%}
        select
            event_id,
            customer_id,
            event_name,
            occurred_at,
            properties_raw
        from {{ this }}
        where event_id in (select arrived.event_id from arrived)
    {%- else -%}
        select * from arrived
        where false
    {%- endif %}

),

-- A new copy of a kept event is stored beside the kept copies and all of them are ranked again
-- (and re-stamped: the incremental models downstream then see the customers, carts and orders
-- of the copy that lost as well as of the one that won).
candidates as (

    select distinct * from (

        select * from arrived

        union all

        select * from kept_copies

    ) as copies

),

-- At-least-once ingestion delivers some events twice; the first copy wins (the earliest, then
-- by payload, so the choice never depends on load order). Every distinct copy is kept, flagged,
-- and stg_raw__events reads only the first; deciding before the as_of filter there picks the
-- same copy as filtering first: the earliest copy is visible whenever any copy is.
ranked as (

    select
        *,
        row_number() over (
            partition by event_id
            order by occurred_at, properties_raw, customer_id, event_name
        ) = 1 as is_first_copy
    from candidates

),

stamped as (

    select
        *,
        cast('{{ loaded_as_of }}' as timestamptz) as loaded_as_of,
        -- Wall-clock time of the load: bookkeeping for the window above, never a model input.
        current_timestamp as loaded_at
    from ranked

),

parsed as (

    select
        *,
        {{ nudge_parse_json('properties_raw') }} as properties
    from stamped

),

final as (

    select
        event_id,
        customer_id,
        event_name,
        occurred_at,
        properties is not null or properties_raw is null as has_valid_properties,
        properties ->> 'cart_id' as cart_id,
        properties ->> 'order_id' as order_id,
        properties ->> 'product_id' as product_id,
        {{ nudge_truncate("properties ->> 'name'", 'max_product_name_chars') }} as product_name,
        {{ nudge_try_cast("properties ->> 'price'", 'decimal(18, 2)') }} as price,
        -- A price or quantity that is present but not a number ("twelve") is flagged rather than
        -- read as a number it is not: the emails leave such items out.
        properties ->> 'price' is null
        or {{ nudge_try_cast("properties ->> 'price'", 'decimal(18, 2)') }} is not null
            as has_valid_price,
        coalesce({{ nudge_try_cast("properties ->> 'quantity'", 'integer') }}, 1) as quantity,
        properties ->> 'quantity' is null
        or {{ nudge_try_cast("properties ->> 'quantity'", 'integer') }} is not null
            as has_valid_quantity,
        {{ nudge_try_cast("properties ->> 'revenue'", 'decimal(18, 2)') }} as revenue,
        upper(properties ->> 'currency') as currency,
        {{ nudge_web_url("properties ->> 'url'") }} as url,
        {{ nudge_web_url("properties ->> 'image_url'") }}
            as image_url,
        properties,
        properties_raw,
        is_first_copy,
        loaded_as_of,
        loaded_at
    from parsed

)

select * from final
