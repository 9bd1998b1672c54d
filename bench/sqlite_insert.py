#!/usr/bin/env python3
"""SQLite's own cost of a record: the rows the writer stores, inserted again as it binds them.

The synthetic records of bench/writer_throughput.py go through the daemon's writer once
(decoder, context, BatchWriter). The rows it stored are then inserted again into new files,
in the writer's batches (one transaction each, exits then execs, as storage/batches.py does),
with the writer's own statements (batches.INSERT_EXIT, INSERT_EXEC: only the columns a type
fills are bound) and pragmas (store.engine_for), in configurations alternated rep by rep:

- `sqlite3`: Python's module and the system's SQLite, the events table's three indexes: what
  the daemon pays;
- `sqlite3, no indexes`: the same file without them (the issue #21 decision "fewer indexes in
  the live file");
- `apsw`: the same file and statements through apsw and the SQLite it bundles, when apsw can
  be imported (it is not a dependency: the measure of a decision #21 leaves open);
- `compiled inserts`: the same file and statements through the writer's compiled inserts
  (storage/_insert.c, batches.insert_rows), which bind the writer's rows themselves.

The value tuples (the rows, for the compiled inserts) are made before the clock starts: what is
timed is binding, SQLite's insert and the commit, the CPU of this process. Each file is then read back: it must hold exactly the
rows the writer stored, or the bench fails.

    .venv/bin/python bench/sqlite_insert.py --records 100000 --reps 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import writer_throughput as W  # noqa: E402
from auditd_lite import chain  # noqa: E402
from auditd_lite.dbfiles import LIVE_NAME  # noqa: E402
from auditd_lite.storage import batches, store  # noqa: E402
from auditd_lite.storage.schema import events  # noqa: E402

INDEXES = [ix.name for ix in events.indexes]


def stored_rows(records: int, work: Path, batch: int) -> list[tuple]:
    """The rows the real writer stored for ``records`` synthetic records, in chain.EVENT_COLUMNS
    order (the writer's own row shape, storage/batches.ChainPosition.insert)."""
    W.one_run(W.synthetic(records), work / "source", batch, rotate_mb=1 << 20)
    return stored(work / "source" / LIVE_NAME)


def batched(rows: list[tuple], batch: int) -> list[tuple[list, list, list]]:
    """Each batch's (exit values, exec values, rows): what the module binds, what the compiled
    inserts take."""
    event = batches._EVENT
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        out.append(([batches._EXIT_VALUES(r) for r in chunk if r[event] == "exit"],
                     [batches._EXEC_VALUES(r) for r in chunk if r[event] != "exit"], chunk))
    return out


def new_file(where: Path, indexes: bool) -> Path:
    """A live file at the head revision, made by the daemon's own code, with or without the
    events table's indexes."""
    engine, conn = store.open_live(where)
    if not indexes:
        for name in INDEXES:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        conn.commit()
    conn.close()
    engine.dispose()
    return where / LIVE_NAME


def stored(path: Path) -> list[tuple]:
    """The events rows of the file at ``path``, in chain.EVENT_COLUMNS order."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(f"SELECT {', '.join(chain.EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
    finally:
        con.close()


def pragmas(execute) -> None:
    execute("PRAGMA journal_mode=WAL")
    execute("PRAGMA synchronous=NORMAL")
    execute(f"PRAGMA wal_autocheckpoint={store.WAL_CHECKPOINT_PAGES}")


def timed(execute, executemany, work: list) -> float:
    """CPU seconds of the writer's batches through a connection's ``execute`` and
    ``executemany``: one transaction each, its exits then its execs."""
    t0 = time.process_time()
    for exits, execs, _ in work:
        execute("BEGIN")
        if exits:
            executemany(batches.INSERT_EXIT, exits)
        if execs:
            executemany(batches.INSERT_EXEC, execs)
        execute("COMMIT")
    return time.process_time() - t0


def insert_sqlite3(path: Path, work: list) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        pragmas(con.execute)
        return timed(con.execute, con.executemany, work)
    finally:
        con.close()


def insert_compiled(path: Path, work: list) -> float:
    """The writer's own call (batches.insert_rows) on a SQLAlchemy connection of the daemon's
    engine, one transaction a batch."""
    engine = store.engine_for(path)
    conn = engine.connect()
    try:
        conn.commit()
        if batches._compiled_handle(conn) is None:
            raise SystemExit(f"the compiled inserts do not run here: {batches.INSERTS}")
        conn.rollback()
        t0 = time.process_time()
        for _, _, rows in work:
            with conn.begin():
                batches.insert_rows(conn, rows)
        return time.process_time() - t0
    finally:
        conn.close()
        engine.dispose()


def apsw_module():
    """apsw where it is installed, else None: it is measured only there."""
    try:
        import apsw  # noqa: PLC0415
    except ImportError:
        return None
    return apsw


def insert_apsw(path: Path, work: list) -> float:
    con = apsw_module().Connection(str(path))
    try:
        pragmas(lambda sql: con.execute(sql).fetchall())
        return timed(con.execute, con.executemany, work)
    finally:
        con.close()


def configurations() -> dict:
    cases = {"sqlite3": (True, insert_sqlite3), "sqlite3, no indexes": (False, insert_sqlite3)}
    if apsw_module() is not None:
        cases["apsw"] = (True, insert_apsw)
    if batches.INSERTS == "compiled":
        cases["compiled inserts"] = (True, insert_compiled)
    return cases


def versions() -> dict:
    out = {"sqlite3": sqlite3.sqlite_version}
    apsw = apsw_module()
    if apsw is not None:
        out["apsw"] = f"{apsw.apsw_version()} (SQLite {apsw.sqlite_lib_version()})"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=W.DEFAULT_BATCH)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    W.logsetup.configure("warning")
    tmp = Path(tempfile.mkdtemp(prefix="auditd-sqlite-insert-"))
    try:
        rows = stored_rows(a.records, tmp, a.batch)
        work = batched(rows, a.batch)
        cases = configurations()
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for rep in range(a.reps):
            order = list(cases) if rep % 2 == 0 else list(reversed(cases))
            for name in order:
                indexes, insert = cases[name]
                where = tmp / f"rep{rep}-{len(cpu[name])}-{name.replace(' ', '').replace(',', '-')}"
                path = new_file(where, indexes)
                cpu[name].append(insert(path, work) / len(rows) * 1e6)
                if stored(path) != rows:
                    raise SystemExit(f"{name}: the file does not hold the rows inserted")
                shutil.rmtree(where)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def cell(v: list[float], fmt: str = ".2f") -> str:
        v = sorted(v)
        return f"{statistics.median(v):{fmt}} ({v[0]:{fmt}}..{v[-1]:{fmt}})"

    print(f"{len(rows):,} rows the writer stored, inserted again in batches of {a.batch}, {a.reps} reps "
          f"alternated; {', '.join(f'{k} {v}' for k, v in versions().items())}\n")
    print("| configuration | CPU µs per record | against sqlite3, per rep |\n|---|---|---|")
    base = cpu["sqlite3"]
    for name, values in cpu.items():
        print(f"| {name} | {cell(values)} | {cell([x / y for x, y in zip(values, base)], '.3f')} |")
    if a.json:
        a.json.write_text(json.dumps({"rows": len(rows), "batch": a.batch, "versions": versions(),
                                      "cpu_us_per_record": cpu}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
