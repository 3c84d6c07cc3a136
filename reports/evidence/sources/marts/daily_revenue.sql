select * from marts.daily_revenue
