{#-
    The statistics of the reporting models, in plain SQL arithmetic so every warehouse runs them
    (no erf or distribution functions needed). 95 % throughout: z = 1.959964.
-#}

{% macro nudge_z95() -%}
    1.959964
{%- endmacro %}

{#- Two-sided p-value of a standard normal statistic: 2 * (1 - Phi(|z|)), by Abramowitz and
    Stegun 26.2.17 (absolute error below 1.5e-7 on the p-value), since few SQL engines ship erf. -#}
{% macro nudge_two_sided_p_value(z) -%}
    (
        2 * exp(-0.5 * ({{ z }}) * ({{ z }})) / sqrt(2 * pi())
        * (
            0.319381530 * (1 / (1 + 0.2316419 * abs({{ z }})))
            - 0.356563782 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 2)
            + 1.781477937 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 3)
            - 1.821255978 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 4)
            + 1.330274429 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 5)
        )
    )
{%- endmacro %}

{#- Pooled two-proportion z statistic of successes/trials (a) against (b); null when it is
    undefined (an empty group, or every trial of both groups the same outcome). -#}
{% macro nudge_two_proportion_z(successes_a, trials_a, successes_b, trials_b) -%}
    (
        (
            cast({{ successes_a }} as double precision) / nullif({{ trials_a }}, 0)
            - cast({{ successes_b }} as double precision) / nullif({{ trials_b }}, 0)
        )
        / nullif(
            sqrt(
                (cast({{ successes_a }} + {{ successes_b }} as double precision)
                / nullif({{ trials_a }} + {{ trials_b }}, 0))
                * (1 - cast({{ successes_a }} + {{ successes_b }} as double precision)
                / nullif({{ trials_a }} + {{ trials_b }}, 0))
                * (1.0 / nullif({{ trials_a }}, 0) + 1.0 / nullif({{ trials_b }}, 0))
            ),
            0
        )
    )
{%- endmacro %}

{#- Wilson score interval of a proportion (side: -1 low, +1 high): unlike p +- z*se it stays
    inside [0, 1] and is honest for small samples and rates near 0, as email rates are. -#}
{% macro nudge_wilson_bound(successes, trials, side) -%}
    (
        (
            cast({{ successes }} as double precision) / nullif({{ trials }}, 0)
            + {{ nudge_z95() }} * {{ nudge_z95() }} / (2.0 * nullif({{ trials }}, 0))
            + ({{ side }}) * {{ nudge_z95() }} * sqrt(
                (cast({{ successes }} as double precision) / nullif({{ trials }}, 0))
                * (1 - cast({{ successes }} as double precision) / nullif({{ trials }}, 0))
                / nullif({{ trials }}, 0)
                + {{ nudge_z95() }} * {{ nudge_z95() }}
                / (4.0 * nullif({{ trials }}, 0) * nullif({{ trials }}, 0))
            )
        )
        / (1 + {{ nudge_z95() }} * {{ nudge_z95() }} / nullif({{ trials }}, 0))
    )
{%- endmacro %}
