MODEL (
  name marts.dim_customers,
  kind FULL,
  owner 'team:analytics',
  description 'One row per customer: segment, country and tenure; no raw PII.',
  grain customer_id,
  column_descriptions (
    customer_id = 'Customer identifier',
    email_hash = 'Salted hash of the e-mail address (join key for CRM exports)',
    country = 'ISO country code',
    segment = 'consumer, business or vip',
    signup_date = 'Day the account was created',
    tenure_days = 'Days since signup, as of the latest snapshot'
  ),
  audits (
    not_null(columns := (customer_id, segment)),
    unique_values(columns := (customer_id))
  )
);

SELECT
  customer_id,
  email_hash,
  country,
  segment,
  signup_date,
  date_diff('day', signup_date, (SELECT max(signup_date) FROM staging.stg_customers)) AS tenure_days
FROM staging.stg_customers
