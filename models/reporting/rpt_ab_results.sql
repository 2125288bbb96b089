-- A/B results per step with variants: each variant's click and conversion (attributed order)
-- rates with 95 % Wilson intervals, and a winner only when the leader beats the runner-up by a
-- two-proportion z-test (p < 0.05) and every variant has var ab_min_sends sends. Variants are
-- drawn at random per entry and step, so the rates compare like with like.
with

sends as (

    select * from {{ ref('fct_sends') }}
    where status = 'sent' and variant is not null

),

variants as (

    select
        trigger,
        step,
        variant,
        count(*) as sent,
        count(first_clicked_at) as clicked,
        count(*) filter (where attributed_orders > 0) as conversions
    from sends
    group by trigger, step, variant

),

steps as (

    select
        trigger,
        step,
        count(*) as variant_count,
        min(sent) >= {{ var('ab_min_sends') | int }} as is_sample_sufficient
    from variants
    group by trigger, step

),

-- Each variant against the best of the others: the leader meets the runner-up.
compared as (

    select
        variants.*,
        steps.variant_count,
        steps.is_sample_sufficient,
        (
            select
                {{ nudge_two_proportion_z(
                    'variants.clicked', 'variants.sent', 'other.clicked', 'other.sent') }}
            from variants as other
            where
                other.trigger = variants.trigger
                and other.step = variants.step
                and other.variant != variants.variant
            order by cast(other.clicked as double precision) / other.sent desc, other.variant
            limit 1
        ) as click_z,
        (
            select
                {{ nudge_two_proportion_z(
                    'variants.conversions', 'variants.sent', 'other.conversions', 'other.sent'
                ) }}
            from variants as other
            where
                other.trigger = variants.trigger
                and other.step = variants.step
                and other.variant != variants.variant
            order by cast(other.conversions as double precision) / other.sent desc, other.variant
            limit 1
        ) as conversion_z
    from variants
    inner join steps
        on variants.trigger = steps.trigger and variants.step = steps.step

),

rated as (

    select
        trigger,
        step,
        variant,
        sent,
        clicked,
        cast(clicked as double precision) / sent as click_rate,
        {{ nudge_wilson_bound('clicked', 'sent', -1) }} as click_rate_ci_low,
        {{ nudge_wilson_bound('clicked', 'sent', 1) }} as click_rate_ci_high,
        conversions,
        cast(conversions as double precision) / sent as conversion_rate,
        {{ nudge_wilson_bound('conversions', 'sent', -1) }} as conversion_rate_ci_low,
        {{ nudge_wilson_bound('conversions', 'sent', 1) }} as conversion_rate_ci_high,
        {{ nudge_two_sided_p_value('click_z') }} as click_p_value,
        {{ nudge_two_sided_p_value('conversion_z') }} as conversion_p_value,
        is_sample_sufficient,
        coalesce(
            is_sample_sufficient and variant_count > 1 and click_z > 0
            and {{ nudge_two_sided_p_value('click_z') }} < 0.05,
            false
        ) as is_click_winner,
        coalesce(
            is_sample_sufficient and variant_count > 1 and conversion_z > 0
            and {{ nudge_two_sided_p_value('conversion_z') }} < 0.05,
            false
        ) as is_conversion_winner
    from compared

),

final as (

    select
        *,
        case
            when not is_sample_sufficient then 'insufficient_sample'
            when is_click_winner or is_conversion_winner then 'winner'
            when
                bool_or(is_click_winner or is_conversion_winner)
                    over (partition by trigger, step)
                then 'behind'
            else 'no_winner'
        end as verdict
    from rated

)

select * from final
