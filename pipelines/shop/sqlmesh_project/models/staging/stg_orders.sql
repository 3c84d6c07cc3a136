MODEL (
  name staging.stg_orders,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_date),
  owner 'team:analytics',
  description 'Orders by order day; the shipping address (PII) is dropped.',
  grain order_id,
  column_descriptions (
    order_id = 'Order identifier',
    customer_id = 'Who ordered',
    order_ts = 'When the order was placed (UTC)',
    order_date = 'Day the order was placed',
    status = 'placed, shipped, cancelled or returned',
    currency = 'ISO currency of the order'
  ),
  audits (
    not_null(columns := (order_id, customer_id, order_date, currency)),
    unique_values(columns := (order_id)),
    accepted_values(column := status, is_in := ('placed', 'shipped', 'cancelled', 'returned'))
  )
);

SELECT
  order_id::BIGINT AS order_id,
  customer_id::BIGINT AS customer_id,
  order_ts::TIMESTAMP AS order_ts,
  ds::DATE AS order_date,
  status::VARCHAR AS status,
  currency::VARCHAR AS currency
FROM raw.orders
WHERE ds BETWEEN @start_date AND @end_date
