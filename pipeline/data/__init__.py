"""Data sources, expectation suites, ingestion, validation and preparation (no model code)."""
