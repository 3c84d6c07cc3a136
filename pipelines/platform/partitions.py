"""The one daily partitioning shared by ingestion and the SQLMesh models.

SQLMesh's ``model_defaults.start`` in the bundled project is the same date, so a date range
picked in the Dagster UI maps one-to-one onto SQLMesh's daily intervals.
"""

import dagster as dg

PROJECT_START = "2026-01-01"
DAILY = dg.DailyPartitionsDefinition(start_date=PROJECT_START)
