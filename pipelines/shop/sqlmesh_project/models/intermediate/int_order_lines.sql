MODEL (
  name intermediate.int_order_lines,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_date),
  owner 'team:analytics',
  description 'Order lines with product, status and the line amount converted to USD.',
  grain order_item_id,
  column_descriptions (
    order_item_id = 'Order line identifier',
    order_id = 'Order of this line',
    order_date = 'Day the order was placed',
    customer_id = 'Who ordered',
    status = 'Order status',
    product_id = 'Product sold',
    category = 'Product category',
    quantity = 'Units',
    line_amount_usd = 'quantity x unit price, in USD'
  ),
  audits (
    not_null(columns := (order_item_id, order_date, line_amount_usd, category)),
    accepted_range(column := line_amount_usd, min_v := 0),
    assert_referential_integrity(column := product_id, parent := staging.stg_products, parent_column := product_id)
  )
);

SELECT
  i.order_item_id,
  i.order_id,
  i.order_date,
  o.customer_id,
  o.status,
  i.product_id,
  p.category,
  i.quantity,
  round(i.quantity * i.unit_price * coalesce(fx.usd_rate, 1.0), 2)::DOUBLE AS line_amount_usd
FROM staging.stg_order_items AS i
JOIN staging.stg_orders AS o
  ON o.order_id = i.order_id AND o.order_date BETWEEN @start_date AND @end_date
LEFT JOIN staging.stg_products AS p
  ON p.product_id = i.product_id
LEFT JOIN staging.stg_fx_rates AS fx
  ON fx.rate_date = i.order_date AND fx.currency = o.currency
WHERE i.order_date BETWEEN @start_date AND @end_date
