"""The live database's read-write side: directory, engine, pragmas and migrations.

Names, order, read-only opens and the lock are auditd_lite.dbfiles' (docs/design.md, "One
owner for the database files").
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine

from ..dbfiles import DIR_MODE, FILE_MODE, LIVE_NAME, lock_dir
from ..errors import BadInput
from ..resources import resource_dir

# WAL pages between checkpoints. SQLite's 1,000 makes a checkpoint, with its
# fsyncs and a second copy of every page, every 4 MiB of records. With
# synchronous=NORMAL a power cut can lose the commits since the last
# checkpoint (a crash of the daemon loses none): 16 MiB of records is a few
# seconds at the heaviest load, like auditd's flush=incremental_async.
WAL_CHECKPOINT_PAGES = 4096


def prepare_dir(db_dir: Path) -> Path:
    try:
        db_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create database directory {db_dir}: {e.strerror}") from None
    if not os.access(db_dir, os.W_OK | os.X_OK):
        raise BadInput(f"database directory {db_dir} is not writable")
    return db_dir


def engine_for(path: Path, synchronous: str = "NORMAL", wal_pages: int = WAL_CHECKPOINT_PAGES) -> Engine:
    """The engine of the file at ``path``: WAL, ``synchronous``, a checkpoint every ``wal_pages``
    pages, after which the WAL file is cut back to that size (under a small retention cap the
    WAL must stay small: storage/rotation.py, Limits)."""
    # URL.create takes the path as it is: parsed from "sqlite:///..." text, a '?' in a
    # directory's name would start the URL's query
    engine = create_engine(URL.create("sqlite", database=str(path)))

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA wal_autocheckpoint={int(wal_pages)}")
        if wal_pages < WAL_CHECKPOINT_PAGES:
            cur.execute(f"PRAGMA journal_size_limit={int(wal_pages) * 4096}")
        cur.close()

    return engine


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Bring the database on ``conn`` to ``revision`` (Alembic, migrations/)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resource_dir("migrations")))
    cfg.attributes["connection"] = conn
    # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE:
    # the migration's DDL would commit statement by statement, and a failure
    # half-way (a full disk) would leave a half-migrated file that no later
    # attempt can finish. SQLite's DDL is transactional once we begin.
    if not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN")
    try:
        command.upgrade(cfg, revision)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


# the newest revision in migrations/versions; tests/test_storage.py holds it to Alembic's head
HEAD_REVISION = "0007"
# the table Alembic keeps its revision in, as Alembic creates it
_VERSION_TABLE = ("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                  "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")


def _revision(conn: Connection) -> str | None:
    """The file's revision; "" for a file with no tables at all, None for one Alembic never saw."""
    tables = {r[0] for r in conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" not in tables:
        return "" if not tables else None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def ensure_head(conn: Connection) -> None:
    """The file on ``conn`` at the head revision, importing Alembic only when a file needs
    upgrading: a file made here is made from the tables and stamped, Alembic's way of building
    a database at head from scratch (its 10 MiB of modules would otherwise stay in the daemon
    for good: docs/design.md, "The daemon never maps the compiler"). tests/test_storage.py
    holds the two ways to the same schema."""
    from .schema import metadata

    revision = _revision(conn)
    conn.rollback()  # end the read: the schema's DDL below is one transaction of its own
    if revision == HEAD_REVISION:
        return
    if revision != "":
        upgrade(conn)
        return
    conn.exec_driver_sql("BEGIN")
    try:
        metadata.create_all(conn)
        conn.exec_driver_sql(_VERSION_TABLE)
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD_REVISION,))
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def open_live(db_dir: Path, synchronous: str = "NORMAL",
              wal_pages: int = WAL_CHECKPOINT_PAGES) -> tuple[Engine, Connection]:
    """The one read-write connection to ``db_dir/audit.db``, at the head revision."""
    path = prepare_dir(db_dir) / LIVE_NAME
    fresh = not path.exists()
    engine = engine_for(path, synchronous, wal_pages)
    conn = None
    try:
        conn = engine.connect()
        if fresh:
            os.chmod(path, FILE_MODE)
        ensure_head(conn)
    except BaseException:
        # the caller retries later (a full disk): leave nothing open
        if conn is not None:
            conn.close()
        engine.dispose()
        if fresh:
            # a file we just created holds no record: the next try starts clean
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        raise
    return engine, conn


def upgrade_live(db_dir: Path) -> str:
    """`auditd-lite db upgrade`: the live file to head, with the daemon stopped."""
    from sqlalchemy import text

    path = db_dir / LIVE_NAME
    if not path.is_file():
        raise BadInput(f"no live database to upgrade: {path}")
    fd = lock_dir(db_dir)
    try:
        engine = engine_for(path)
        with engine.connect() as conn:
            def current():
                try:
                    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                except Exception:
                    return None
            before = current()
            conn.rollback()
            upgrade(conn)
            after = current()
        engine.dispose()
    finally:
        os.close(fd)
    return f"{path}: {before or 'none'} -> {after}"
