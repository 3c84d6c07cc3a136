MODEL (
  name staging.stg_customers,
  kind FULL,
  owner 'team:analytics',
  description 'Latest customer snapshot; names dropped and e-mail addresses hashed (PII masked here).',
  grain customer_id,
  column_descriptions (
    customer_id = 'Customer identifier',
    email_hash = 'Salted SHA-256 of the lower-cased e-mail address',
    country = 'ISO country code',
    segment = 'consumer, business or vip',
    signup_date = 'Day the account was created'
  ),
  audits (
    not_null(columns := (customer_id, email_hash, country)),
    unique_values(columns := (customer_id)),
    accepted_values(column := segment, is_in := ('consumer', 'business', 'vip'))
  )
);

SELECT
  customer_id::BIGINT AS customer_id,
  @mask_pii(email) AS email_hash,
  country::VARCHAR AS country,
  segment::VARCHAR AS segment,
  signup_date::DATE AS signup_date
FROM raw.customers
-- not max(ds): DuckDB 1.5.5 fails on max() over a single hive-partitioned file
WHERE ds = (SELECT ds FROM raw.customers ORDER BY ds DESC LIMIT 1)
