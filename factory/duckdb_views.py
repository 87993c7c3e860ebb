"""An Arrow table visible to DuckDB for one statement or a few: `registered(con, name, table)`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import duckdb


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: Any) -> Iterator[None]:
    """Register `table` as the view `name` for the block and unregister it after.

    After a statement fails inside a transaction, DuckDB refuses the unregister too ("Current
    transaction is aborted"); that error is dropped, so the one that says what went wrong (an
    out-of-memory, say) is the one raised."""
    con.register(name, table)
    try:
        yield
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister(name)
