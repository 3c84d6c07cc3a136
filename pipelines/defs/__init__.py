"""Definitions per domain: ingestion, transformation, quality, automation, governance, reporting."""
