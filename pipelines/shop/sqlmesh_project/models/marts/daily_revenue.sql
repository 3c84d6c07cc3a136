MODEL (
  name marts.daily_revenue,
  kind INCREMENTAL_BY_TIME_RANGE (time_column order_date),
  owner 'team:finance',
  description 'Revenue KPIs per day (cancelled and returned orders excluded from revenue).',
  grain order_date,
  column_descriptions (
    order_date = 'Day',
    orders = 'Orders placed',
    revenue_usd = 'Revenue from placed and shipped orders, USD',
    avg_order_value_usd = 'Revenue per revenue-bearing order, USD',
    cancelled_share = 'Share of orders cancelled or returned'
  ),
  audits (
    not_null(columns := (order_date, orders, revenue_usd)),
    unique_values(columns := (order_date)),
    accepted_range(column := revenue_usd, min_v := 0),
    accepted_range_non_blocking(column := cancelled_share, min_v := 0, max_v := 0.6)
  )
);

SELECT
  order_date,
  count(*)::BIGINT AS orders,
  round(sum(order_total_usd) FILTER (WHERE status IN ('placed', 'shipped')), 2)::DOUBLE AS revenue_usd,
  round(avg(order_total_usd) FILTER (WHERE status IN ('placed', 'shipped')), 2)::DOUBLE AS avg_order_value_usd,
  round(avg(CASE WHEN status IN ('cancelled', 'returned') THEN 1.0 ELSE 0.0 END), 4)::DOUBLE AS cancelled_share
FROM marts.fct_orders
WHERE order_date BETWEEN @start_date AND @end_date
GROUP BY order_date
