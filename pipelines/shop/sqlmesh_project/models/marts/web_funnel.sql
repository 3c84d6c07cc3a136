MODEL (
  name marts.web_funnel,
  kind INCREMENTAL_BY_TIME_RANGE (time_column event_date),
  owner 'team:growth',
  description 'Daily web funnel: sessions, carts, checkouts and conversion.',
  grain event_date,
  column_descriptions (
    event_date = 'Day',
    sessions = 'Sessions with at least one event',
    cart_sessions = 'Sessions that added to cart',
    checkout_sessions = 'Sessions that checked out',
    conversion_rate = 'checkout_sessions / sessions'
  ),
  audits (
    not_null(columns := (event_date, sessions)),
    unique_values(columns := (event_date)),
    accepted_range(column := conversion_rate, min_v := 0, max_v := 1)
  )
);

SELECT
  event_date,
  count(DISTINCT session_id)::BIGINT AS sessions,
  count(DISTINCT session_id) FILTER (WHERE event_type = 'add_to_cart')::BIGINT AS cart_sessions,
  count(DISTINCT session_id) FILTER (WHERE event_type = 'checkout')::BIGINT AS checkout_sessions,
  round(count(DISTINCT session_id) FILTER (WHERE event_type = 'checkout') / count(DISTINCT session_id), 4)::DOUBLE
    AS conversion_rate
FROM staging.stg_web_events
WHERE event_date BETWEEN @start_date AND @end_date
GROUP BY event_date
