MODEL (
  name staging.stg_web_events,
  kind INCREMENTAL_BY_TIME_RANGE (time_column event_date),
  owner 'team:growth',
  description 'Clickstream events; client IP addresses hashed (PII masked here).',
  grain event_id,
  column_descriptions (
    event_id = 'Event identifier',
    event_ts = 'When the event happened (UTC)',
    event_date = 'Day of the event',
    session_id = 'Browser session',
    customer_id = 'Logged-in customer, if any',
    event_type = 'page_view, add_to_cart or checkout',
    page = 'Page path',
    ip_hash = 'Salted SHA-256 of the client IP address'
  ),
  audits (
    not_null(columns := (event_id, event_date, session_id, event_type)),
    unique_values(columns := (event_id)),
    accepted_values(column := event_type, is_in := ('page_view', 'add_to_cart', 'checkout'))
  )
);

SELECT
  event_id::VARCHAR AS event_id,
  event_ts::TIMESTAMP AS event_ts,
  ds::DATE AS event_date,
  session_id::VARCHAR AS session_id,
  customer_id::BIGINT AS customer_id,
  event_type::VARCHAR AS event_type,
  page::VARCHAR AS page,
  @mask_pii(ip_address) AS ip_hash
FROM raw.web_events
WHERE ds BETWEEN @start_date AND @end_date
