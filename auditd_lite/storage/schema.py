"""The one description of the database schema (SQLAlchemy 2.x models).

Alembic revisions in ``migrations/`` are written against these models. The
read side (query, tree, sql, export) uses plain ``sqlite3``, so that a query
does not pay SQLAlchemy's import time; for it, ``rows.ROW_FIELDS`` (and
through it ``chain.EVENT_COLUMNS``) copies the order of ``events``' columns,
and tests/test_records.py and tests/test_chain.py hold the copy to these models.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, LargeBinary, Text
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One start of the daemon. ``stopped_ns`` stays NULL after an unclean stop."""

    __tablename__ = "runs"
    id = Column(Integer, primary_key=True)
    boot_id = Column(Text, nullable=False)
    host = Column(Text, nullable=False)
    kernel = Column(Text, nullable=False)
    version = Column(Text, nullable=False)
    settings = Column(Text, nullable=False)  # JSON
    started_ns = Column(BigInteger, nullable=False)
    attached_ns = Column(BigInteger)
    stopped_ns = Column(BigInteger)
    lost_kernel = Column(BigInteger, nullable=False, default=0)
    lost_user = Column(BigInteger, nullable=False, default=0)
    events_written = Column(BigInteger, nullable=False, default=0)


class Batch(Base):
    """One writer transaction; carries the loss seen since the previous batch."""

    __tablename__ = "batches"
    id = Column(Integer, primary_key=True)
    run_id = Column(Integer, ForeignKey("runs.id"), nullable=False)
    written_ns = Column(BigInteger, nullable=False)
    first_event_id = Column(BigInteger)
    last_event_id = Column(BigInteger)
    count = Column(Integer, nullable=False)
    lost_kernel = Column(BigInteger, nullable=False, default=0)
    lost_user = Column(BigInteger, nullable=False, default=0)
    prev_hash = Column(Text)  # hex SHA-256; see auditd_lite.chain
    hash = Column(Text)


class Event(Base):
    """exec, exec_failed and exit records in one table.

    A process is identified by (runs.boot_id, pid, start_ns); ``start_ns`` is
    the kernel's ``task->start_time`` (CLOCK_MONOTONIC at fork).
    Strings from the kernel that are not UTF-8 are stored with the offending
    bytes escaped as ``\\xNN``; ``argv`` is kept byte-exact, NUL-separated.
    """

    __tablename__ = "events"
    id = Column(Integer, primary_key=True)
    run_id = Column(Integer, ForeignKey("runs.id"), nullable=False)
    batch_id = Column(Integer, ForeignKey("batches.id"), nullable=False)
    event = Column(Text, nullable=False)  # exec | exec_failed | exit
    time_ns = Column(BigInteger, nullable=False)  # UTC, ns since the epoch
    pid = Column(Integer, nullable=False)
    tid = Column(Integer, nullable=False)
    ppid = Column(Integer, nullable=False)
    uid = Column(BigInteger, nullable=False)
    gid = Column(BigInteger, nullable=False)
    comm = Column(Text, nullable=False)
    start_ns = Column(BigInteger, nullable=False)
    # exec and exec_failed
    old_pid = Column(Integer)
    euid = Column(BigInteger)
    auid = Column(BigInteger)
    sessionid = Column(BigInteger)
    cgroup_id = Column(BigInteger)
    filename = Column(Text)
    argv = Column(LargeBinary)
    argc = Column(Integer)
    args_truncated = Column(Boolean)
    errno = Column(Integer)
    # exit
    status = Column(Integer)
    exit_code = Column(Integer)
    signal = Column(Integer)
    core_dumped = Column(Boolean)
    duration_ns = Column(BigInteger)


Index("ix_events_time", Event.time_ns)
Index("ix_events_comm_time", Event.comm, Event.time_ns)
Index("ix_events_pid_start", Event.pid, Event.start_ns)


class SeenProcess(Base):
    """A process already running when a run started, read from /proc.

    /proc gives the start time in clock ticks only, so ``start_ns`` here is
    exact to one tick (``start_tick_ns``); exits join to it by pid and range.
    """

    __tablename__ = "seen_processes"
    id = Column(Integer, primary_key=True)
    run_id = Column(Integer, ForeignKey("runs.id"), nullable=False)
    time_ns = Column(BigInteger, nullable=False)
    pid = Column(Integer, nullable=False)
    ppid = Column(Integer, nullable=False)
    uid = Column(BigInteger, nullable=False)
    comm = Column(Text, nullable=False)
    filename = Column(Text)
    argv = Column(LargeBinary)
    start_ns = Column(BigInteger, nullable=False)
    start_tick_ns = Column(BigInteger, nullable=False)


metadata = Base.metadata
