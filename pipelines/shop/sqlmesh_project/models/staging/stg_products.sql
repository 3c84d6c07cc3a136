MODEL (
  name staging.stg_products,
  kind FULL,
  owner 'team:analytics',
  description 'Latest product catalogue snapshot.',
  grain product_id,
  column_descriptions (
    product_id = 'Product identifier',
    product_name = 'Display name',
    category = 'Product category',
    list_price = 'List price'
  ),
  audits (
    not_null(columns := (product_id, category, list_price)),
    unique_values(columns := (product_id)),
    accepted_range(column := list_price, min_v := 0)
  )
);

SELECT
  product_id::BIGINT AS product_id,
  product_name::VARCHAR AS product_name,
  category::VARCHAR AS category,
  unit_price::DOUBLE AS list_price
FROM raw.products
-- not max(ds): DuckDB 1.5.5 fails on max() over a single hive-partitioned file
WHERE ds = (SELECT ds FROM raw.products ORDER BY ds DESC LIMIT 1)
