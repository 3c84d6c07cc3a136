MODEL (
  name staging.stg_fx_rates,
  kind INCREMENTAL_BY_TIME_RANGE (time_column rate_date),
  owner 'team:finance',
  description 'Daily exchange rates to USD.',
  grain (rate_date, currency),
  column_descriptions (
    rate_date = 'Day the rate applies to',
    currency = 'ISO currency',
    usd_rate = 'USD per unit of currency'
  ),
  audits (
    not_null(columns := (rate_date, currency, usd_rate)),
    unique_combination_of_columns(columns := (rate_date, currency)),
    accepted_range(column := usd_rate, min_v := 0.0001)
  )
);

SELECT
  rate_date::DATE AS rate_date,
  currency::VARCHAR AS currency,
  usd_rate::DOUBLE AS usd_rate
FROM raw.fx_rates
WHERE ds BETWEEN @start_date AND @end_date
