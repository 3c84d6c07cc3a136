MODEL (
  name marts.category_sales,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_date),
  owner 'team:merchandising',
  description 'Units and USD revenue per product category and day.',
  grain (order_date, category),
  column_descriptions (
    order_date = 'Day',
    category = 'Product category',
    units = 'Units sold',
    revenue_usd = 'Revenue from placed and shipped orders, USD'
  ),
  audits (
    not_null(columns := (order_date, category, units)),
    unique_combination_of_columns(columns := (order_date, category)),
    accepted_range(column := units, min_v := 0)
  )
);

SELECT
  order_date,
  category,
  sum(quantity)::BIGINT AS units,
  round(coalesce(sum(line_amount_usd) FILTER (WHERE status IN ('placed', 'shipped')), 0), 2)::DOUBLE AS revenue_usd
FROM intermediate.int_order_lines
WHERE order_date BETWEEN @start_date AND @end_date
GROUP BY order_date, category
