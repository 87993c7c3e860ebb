"""The DuckDB store: one file, a table per stage."""
