{#- A link from source data, only when it is a web address within var max_url_chars: an email
    must never carry a `javascript:` or `data:` href from a shop's payload, and a cut URL would
    point nowhere. Anything else becomes null and the email shows no link. -#}
{% macro nudge_web_url(expression) -%}
    case
        when
            (lower({{ expression }}) like 'https://%' or lower({{ expression }}) like 'http://%')
            and length({{ expression }}) <= {{ var('max_url_chars') | int }}
            then {{ expression }}
    end
{%- endmacro %}

{#- The carrier's public tracking page for a tracking number, from var carrier_tracking_urls
    (carrier name, lowercased, -> the page's address up to the number). Null for a carrier not
    listed, or a number that is not plain letters, digits and dashes (it goes into a URL as
    is). -#}
{% macro nudge_carrier_tracking_url(carrier, tracking_number) -%}
    {%- set pages = var('carrier_tracking_urls') or {} -%}
    {%- if pages -%}
    case
        when {{ nudge_matches(tracking_number, '^[A-Za-z0-9-]+$') }}
            then
                case lower(trim({{ carrier }}))
                    {%- for name, page in pages.items() %}
                    when '{{ name | lower | replace("'", "''") }}'
                        then '{{ page | replace("'", "''") }}' || {{ tracking_number }}
                    {%- endfor %}
                end
    end
    {%- else -%}
    cast(null as varchar)
    {%- endif -%}
{%- endmacro %}

{#- Whether the whole text matches a regular expression, in the warehouse's own syntax (null
    for null text). -#}
{% macro nudge_matches(expression, pattern) -%}
    {{ return(adapter.dispatch('nudge_matches', 'nudge')(expression, pattern)) }}
{%- endmacro %}

{% macro default__nudge_matches(expression, pattern) -%}
    regexp_full_match({{ expression }}, '{{ pattern }}')
{%- endmacro %}

{% macro postgres__nudge_matches(expression, pattern) -%}
    ({{ expression }} ~ '^(?:{{ pattern }})$')
{%- endmacro %}

{#- An id from source data as one segment of a URL path: every byte but the unreserved
    characters (letters, digits, - . _ ~) percent-encoded, UTF-8 first, as RFC 3986 says. An
    order id with `/`, `?`, `#`, `%` or a space would otherwise point at another page, or at
    none. -#}
{% macro nudge_url_segment(expression) -%}
    {{ return(adapter.dispatch('nudge_url_segment', 'nudge')(expression)) }}
{%- endmacro %}

{% macro default__nudge_url_segment(expression) -%}
    url_encode(cast({{ expression }} as varchar))
{%- endmacro %}

{#- PostgreSQL has no url_encode: the same encoding, character by character (null stays
    null: no character, no row, string_agg gives null). -#}
{% macro postgres__nudge_url_segment(expression) -%}
    (
        select
            string_agg(
                case
                    when chars.ch ~ '^[A-Za-z0-9._~-]$' then chars.ch
                    else upper(regexp_replace(
                        encode(convert_to(chars.ch, 'UTF8'), 'hex'), '(..)', E'%\\1', 'g'
                    ))
                end,
                '' order by chars.n
            )
        from regexp_split_to_table(cast({{ expression }} as varchar), '')
            with ordinality as chars (ch, n)
    )
{%- endmacro %}
