"""A run's copies in the database files, and how every reader puts them together (docs/design.md,
"One owner for the database files": dbfiles re-exports these, where the readers ask for them).

Standard library only (the analysis side).
"""

from __future__ import annotations

import sqlite3

# A run's row is copied into every file the run wrote to, each copy counting what went into
# that file, and only the file open when the run stopped has its stop time. One run is its
# (id, started_ns): ids alone repeat in files from another directory. Every reader that puts
# the copies together (stats, sql, export, gaps, tree) uses this rule.
RUN_KEY = ("id", "started_ns")
# the live stream's lines written and dropped (revision 0004; NULL for a run without a stream)
STREAM_COUNTERS = ("stream_lines_written", "stream_lines_dropped")
RUN_COUNTERS = ("events_written", "lost_kernel", "lost_user") + STREAM_COUNTERS
# how each column of the copies is combined; a column not named is the same in every copy
RUN_MERGE = {**dict.fromkeys(RUN_COUNTERS, "sum"), "attached_ns": "min", "stopped_ns": "max"}


def run_key(row: dict) -> tuple:
    return tuple(row.get(c) for c in RUN_KEY)


def run_rows(conn: sqlite3.Connection, schema: str = "main") -> list[dict]:
    """The run rows of one file as column -> value (a file of an older revision lacks some columns)."""
    cols = [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info(runs)")]
    return [dict(zip(cols, row)) for row in conn.execute(f"SELECT * FROM {schema}.runs")]


def merge_run(runs: dict, row: dict) -> dict:
    """Fold one file's copy of a run row into ``runs`` (run_key -> merged row); the merged row.

    Call it once per file that holds a copy: the counters add up file by file. None (a column
    a copy lacks) counts as absent, as SQL's sum, min and max take it.
    """
    key = run_key(row)
    have = runs.get(key)
    if have is None:
        runs[key] = have = dict(row)
        return have
    for col, how in RUN_MERGE.items():
        values = [v for v in (have.get(col), row.get(col)) if v is not None]
        if values:
            have[col] = sum(values) if how == "sum" else min(values) if how == "min" else max(values)
    return have


def run_merge_sql(columns: list[str], quote=lambda c: c) -> str:
    """The select list that merges a run's copies by RUN_MERGE, for ``... GROUP BY id, started_ns``."""
    return ", ".join(quote(c) if c in RUN_KEY else f"{RUN_MERGE.get(c, 'min')}({quote(c)}) AS {quote(c)}"
                     for c in columns)
