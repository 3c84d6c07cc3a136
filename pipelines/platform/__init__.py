"""The platform: settings, the lake (local folder or S3), PostgreSQL, DuckDB and its extensions,
the warehouse (DuckDB file or DuckLake), storage maintenance and repair. Imports no other layer."""
