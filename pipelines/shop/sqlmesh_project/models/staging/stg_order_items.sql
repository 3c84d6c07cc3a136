MODEL (
  name staging.stg_order_items,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_date),
  owner 'team:analytics',
  description 'Order lines by order day.',
  grain order_item_id,
  column_descriptions (
    order_item_id = 'Order line identifier',
    order_id = 'Order of this line',
    product_id = 'Product sold',
    quantity = 'Units',
    unit_price = 'Price per unit in the order currency',
    order_date = 'Day the order was placed'
  ),
  audits (
    not_null(columns := (order_item_id, order_id, product_id, order_date)),
    unique_values(columns := (order_item_id)),
    accepted_range(column := quantity, min_v := 1, max_v := 100)
  )
);

SELECT
  order_item_id::BIGINT AS order_item_id,
  order_id::BIGINT AS order_id,
  product_id::BIGINT AS product_id,
  quantity::INTEGER AS quantity,
  unit_price::DOUBLE AS unit_price,
  ds::DATE AS order_date
FROM raw.order_items
WHERE ds BETWEEN @start_date AND @end_date
