{#- Exactly one first copy (is_first_copy) of each event id, checked for the events this tick's
    load touched. A load ranks every copy of the events it brings again and stamps them with
    its loaded_as_of (this tick's instant, or later when a tick is replayed earlier), so the
    events it did not touch keep the single first copy they had; a full build stamps every row,
    so it checks them all, and an hour without new events checks none. A `unique` test on
    stg_raw__events hashed every event id of the history each tick (14 s at 54M events); this
    probes the history's ids against the few the load touched. -#}
{% test one_first_copy_per_event(model, column_name) %}

with

touched as (

    select distinct {{ column_name }}
    from {{ model }}
    where loaded_as_of >= {{ as_of() }}

),

copies as (

    select
        {{ column_name }},
        count(*) filter (where is_first_copy) as first_copies
    from {{ model }}
    where {{ column_name }} in (select touched.{{ column_name }} from touched)
    group by {{ column_name }}

),

final as (

    select * from copies
    where first_copies != 1

)

select * from final

{% endtest %}
