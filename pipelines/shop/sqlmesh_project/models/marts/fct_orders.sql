MODEL (
  name marts.fct_orders,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_date),
  owner 'team:analytics',
  description 'One row per order with its USD total and the customer segment.',
  grain order_id,
  column_descriptions (
    order_id = 'Order identifier',
    order_date = 'Day the order was placed',
    customer_id = 'Who ordered',
    customer_segment = 'Segment of the customer',
    customer_country = 'Country of the customer',
    status = 'Order status',
    item_count = 'Number of order lines',
    order_total_usd = 'Sum of line amounts in USD'
  ),
  audits (
    not_null(columns := (order_id, order_date, order_total_usd)),
    unique_values(columns := (order_id)),
    accepted_range(column := order_total_usd, min_v := 0),
    assert_referential_integrity(column := customer_id, parent := marts.dim_customers, parent_column := customer_id)
  )
);

SELECT
  l.order_id,
  l.order_date,
  l.customer_id,
  c.segment AS customer_segment,
  c.country AS customer_country,
  max(l.status) AS status, -- one status per order; max is valid on DuckDB, Trino and Athena alike
  count(*)::INTEGER AS item_count,
  round(sum(l.line_amount_usd), 2)::DOUBLE AS order_total_usd
FROM intermediate.int_order_lines AS l
LEFT JOIN marts.dim_customers AS c
  ON c.customer_id = l.customer_id
WHERE l.order_date BETWEEN @start_date AND @end_date
GROUP BY l.order_id, l.order_date, l.customer_id, c.segment, c.country
