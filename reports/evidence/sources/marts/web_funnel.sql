select * from marts.web_funnel
