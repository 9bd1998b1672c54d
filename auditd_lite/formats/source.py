"""What a rendered record needs from outside the record: its run and its file."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Mapping

from ..dbfiles import revision_of

# the audit login uid and session id of a task that has none (the kernel's AUDIT_UID_UNSET,
# (u32)-1): auditd prints them as 4294967295 too
UNSET = 4294967295


@dataclass(frozen=True)
class Source:
    """The facts of the run (daemon start) that wrote a record, and of the file holding it.

    ``revision``: the file's schema revision (Alembic's ``version_num``, e.g. ``"0003"``), None
    when unknown (an export may have no Alembic table). ``lost_kernel``/``lost_user``: the run's
    loss counters as its row said when the Source was made (a running daemon's still grow).
    """

    host: str | None = None
    boot_id: str | None = None
    kernel: str | None = None
    version: str | None = None  # auditd-lite's version in that run
    revision: str | None = None
    run_id: int | None = None
    lost_kernel: int | None = None
    lost_user: int | None = None

    @classmethod
    def from_run(cls, run: Mapping, revision: str | None = None) -> "Source":
        """From a row of a file's ``runs`` table (any mapping of its column names)."""
        return cls(host=run.get("host"), boot_id=run.get("boot_id"), kernel=run.get("kernel"),
                   version=run.get("version"), revision=revision, run_id=run.get("id"),
                   lost_kernel=run.get("lost_kernel"), lost_user=run.get("lost_user"))


def sources_of(conn: sqlite3.Connection) -> dict[int, Source]:
    """A Source for each run of the database file open on ``conn``, by run id: read once per
    file, then every record of a run is rendered with its run's."""
    revision = revision_of(conn)
    cur = conn.execute("SELECT * FROM runs")
    names = [d[0] for d in cur.description]
    return {run["id"]: Source.from_run(run, revision) for run in (dict(zip(names, r)) for r in cur)}
