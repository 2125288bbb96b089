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

-- Null keys cannot be attributed and events after as_of have not happened yet for this tick
-- (clock skew, or a replayed tick): both are dropped rather than failing the build.
valid as (

    select * from typed
    where
        event_id is not null
        and customer_id is not null
        and event_name is not null
        and occurred_at is not null
        and occurred_at <= {{ as_of() }}

),

-- At-least-once ingestion delivers some events twice; the first copy wins.
deduplicated as (

    select * from valid
    qualify row_number() over (partition by event_id order by occurred_at, properties_raw) = 1

),

parsed as (

    select
        *,
        case
            when json_valid(properties_raw) then cast(properties_raw as json)
        end as properties
    from deduplicated

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
        try_cast(properties ->> 'price' as decimal(18, 2)) as price,
        -- A price or quantity that is present but not a number ("twelve") is flagged rather than
        -- read as a number it is not: the emails leave such items out.
        properties ->> 'price' is null
        or try_cast(properties ->> 'price' as decimal(18, 2)) is not null as has_valid_price,
        coalesce(try_cast(properties ->> 'quantity' as integer), 1) as quantity,
        properties ->> 'quantity' is null
        or try_cast(properties ->> 'quantity' as integer) is not null as has_valid_quantity,
        try_cast(properties ->> 'revenue' as decimal(18, 2)) as revenue,
        upper(properties ->> 'currency') as currency,
        {{ nudge_web_url("properties ->> 'url'") }} as url,
        {{ nudge_web_url("properties ->> 'image_url'") }}
            as image_url,
        properties
    from parsed

)

select * from final
