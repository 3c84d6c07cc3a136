select * from marts.category_sales
