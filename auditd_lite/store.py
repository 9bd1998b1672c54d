"""The live database: location, permissions, engine, pragmas and migrations."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

from .errors import BadInput
from .resources import resource_dir

LIVE_NAME = "audit.db"
DIR_MODE = 0o750
FILE_MODE = 0o640


def prepare_dir(db_dir: Path) -> Path:
    try:
        db_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create database directory {db_dir}: {e.strerror}") from None
    if not os.access(db_dir, os.W_OK | os.X_OK):
        raise BadInput(f"database directory {db_dir} is not writable")
    return db_dir


def engine_for(path: Path, synchronous: str = "NORMAL") -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    return engine


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Bring the database on ``conn`` to ``revision`` (Alembic, migrations/)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resource_dir("migrations")))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
    conn.commit()


def open_live(db_dir: Path, synchronous: str = "NORMAL") -> tuple[Engine, Connection]:
    """The one read-write connection to ``db_dir/audit.db``, at the head revision."""
    path = prepare_dir(db_dir) / LIVE_NAME
    fresh = not path.exists()
    engine = engine_for(path, synchronous)
    conn = engine.connect()
    if fresh:
        os.chmod(path, FILE_MODE)
    upgrade(conn)
    return engine, conn
