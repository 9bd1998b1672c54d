"""The one description of the database schema (SQLAlchemy Core tables).

Alembic revisions in ``migrations/`` are written against these tables, and
a new file is made from them (storage/store.py, ensure_head). Core, not the
ORM's declarative models: nothing here needs the ORM, and importing it
would cost the daemon 6 MiB it keeps for good (docs/design.md, "The daemon
never maps the compiler"). The read side (query, tree, sql, export) uses
plain ``sqlite3``, so that a query does not pay SQLAlchemy's import time;
for it, ``rows.ROW_FIELDS`` (and through it ``chain.EVENT_COLUMNS``) copies
the order of ``events``' columns, and tests/test_records.py and
tests/test_chain.py hold the copy to these tables.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        Table, Text)

metadata = MetaData()

# One start of the daemon. ``stopped_ns`` stays NULL after an unclean stop.
runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True),
    Column("boot_id", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("kernel", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("settings", Text, nullable=False),  # JSON
    Column("started_ns", BigInteger, nullable=False),
    Column("attached_ns", BigInteger),
    Column("stopped_ns", BigInteger),
    Column("lost_kernel", BigInteger, nullable=False, default=0),
    Column("lost_user", BigInteger, nullable=False, default=0),
    Column("events_written", BigInteger, nullable=False, default=0),
    # the live stream (run --stream, daemon/stream.py; revision 0004): its lines written and
    # dropped, counted as lost_user is, in each file's copy; NULL for a run without a stream
    Column("stream_lines_written", BigInteger),
    Column("stream_lines_dropped", BigInteger),
)


# One writer transaction; carries the loss seen since the previous batch.
batches = Table(
    "batches", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("written_ns", BigInteger, nullable=False),
    Column("first_event_id", BigInteger),
    Column("last_event_id", BigInteger),
    Column("count", Integer, nullable=False),
    Column("lost_kernel", BigInteger, nullable=False, default=0),
    Column("lost_user", BigInteger, nullable=False, default=0),
    Column("prev_hash", Text),  # hex SHA-256; see auditd_lite.chain
    Column("hash", Text),
    # what else the batch's transaction wrote, covered by its hash from chain format 5 (revision
    # 0007; chain.EVIDENCE_COLUMNS, docs/design.md "Tamper evidence"): the run's stream counters
    # it added to (NULL: a run without a stream), the run-row columns it set with their values
    # (batch_evidence.pack_values), and the seen_processes and removed_files rows it inserted, each an id
    # and its digest (batch_evidence.side_rows)
    Column("stream_written", BigInteger),
    Column("stream_dropped", BigInteger),
    Column("run_values", LargeBinary),
    Column("seen_rows", LargeBinary),
    Column("removal_rows", LargeBinary),
)


# The end of a sealing epoch (auditd_lite/seal.py, revision 0005): an HMAC, with that epoch's
# key, over seal.FIELDS. ``batch_id`` and ``batch_hash`` are the last batch written then (0 and
# the genesis hash before any), which may be in an older file than the seal: no foreign key.
# An epoch is one key chain's (``key_id``): `seal setup --force` begins another at epoch 0.
seals = Table(
    "seals", metadata,
    Column("id", Integer, primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("reason", Text, nullable=False),  # seal.REASONS
    Column("sealed_ns", BigInteger, nullable=False),
    Column("batch_id", Integer, nullable=False),
    Column("batch_hash", Text, nullable=False),
    Column("interval_s", Integer, nullable=False),
    Column("mac", Text, nullable=False),  # hex HMAC-SHA256
)
Index("ix_seals_key_epoch", seals.c.key_id, seals.c.epoch, unique=True)


# exec, exec_failed and exit records in one table.
#
# A process is identified by (runs.boot_id, pid, start_ns); ``start_ns`` is
# the kernel's ``task->start_time`` (CLOCK_MONOTONIC at fork).
# Strings from the kernel that are not UTF-8 are stored with the offending
# bytes escaped as ``\xNN``; ``argv`` is kept byte-exact, NUL-separated.
#
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("event", Text, nullable=False),  # exec | exec_failed | exit
    Column("time_ns", BigInteger, nullable=False),  # UTC, ns since the epoch
    Column("pid", Integer, nullable=False),
    Column("tid", Integer, nullable=False),
    Column("ppid", Integer, nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("gid", BigInteger, nullable=False),
    Column("comm", Text, nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    # exec and exec_failed
    Column("old_pid", Integer),
    Column("euid", BigInteger),
    Column("auid", BigInteger),
    Column("sessionid", BigInteger),
    Column("cgroup_id", BigInteger),
    Column("filename", Text),
    Column("argv", LargeBinary),
    Column("argc", Integer),
    Column("args_truncated", Boolean),
    Column("errno", Integer),
    # exit
    Column("status", Integer),
    Column("exit_code", Integer),
    Column("signal", Integer),
    Column("core_dumped", Boolean),
    Column("duration_ns", BigInteger),
    # context (revision 0003), exec and exec_failed: capture/context.py says what each means
    Column("cwd", Text),            # the working directory, as the process saw it
    Column("cwd_status", Text),     # ok, or what applies: deleted, truncated, chroot, other_ns
    Column("sha256", Text),         # hex; set only when hash_status is inode, ok or by_path
    Column("hash_status", Text),    # capture/exehash.py STATUSES; exec only
    Column("cgroup", Text),         # the path in the cgroup v2 hierarchy
    Column("cgroup_status", Text),  # capture/cgroups.py STATUSES
    Column("unit", Text),           # the systemd unit the cgroup names
    Column("container_id", Text),
    # the gate (revision 0006): rows.GATE_FIELDS
    Column("abi", Text),                   # x64, ia32, x32 (exec and exec_failed; NULL: not seen)
    Column("parent_start_ns", BigInteger),  # the parent's start_ns: (boot, ppid, this) is its identity
)

Index("ix_events_time", events.c.time_ns)
Index("ix_events_comm_time", events.c.comm, events.c.time_ns)
Index("ix_events_pid_start", events.c.pid, events.c.start_ns)


# A process already running when a run started, read from /proc.
#
# /proc gives the start time in clock ticks only, so ``start_ns`` here is
# exact to one tick (``start_tick_ns``); exits join to it by pid and range.
#
seen_processes = Table(
    "seen_processes", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("time_ns", BigInteger, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("ppid", Integer, nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("comm", Text, nullable=False),
    Column("filename", Text),
    Column("argv", LargeBinary),
    Column("start_ns", BigInteger, nullable=False),
    Column("start_tick_ns", BigInteger, nullable=False),
    # the same context as events', from /proc/PID/cwd, exe and cgroup (revision 0003)
    Column("cwd", Text),
    Column("cwd_status", Text),
    Column("sha256", Text),
    Column("hash_status", Text),
    Column("cgroup", Text),
    Column("cgroup_status", Text),
    Column("unit", Text),
    Column("container_id", Text),
    # the batch whose hash covers the row (revision 0007, chain format 5; NULL before)
    Column("batch_id", Integer),
)


# A rotated or set-aside file that retention removed (revision 0007; storage/retention.py,
# docs/design.md "Retention"): which file, why, and where it stood in the chain, so that verify
# tells the cut from a file removed by someone else and gaps shows the span. Covered by the
# hash of batch ``batch_id``. The rows of a removed file are carried into the batch that records
# its removal, so the directory keeps the whole history of what retention removed.
removed_files = Table(
    "removed_files", metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, nullable=False),
    Column("removed_ns", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("reason", Text, nullable=False),  # retention.REASONS
    Column("detail", Text),
    Column("size", BigInteger),  # bytes, with its -wal and -shm
    Column("first_batch_id", Integer),  # NULL: the file could not be read
    Column("first_prev_hash", Text),
    Column("last_batch_id", Integer),
    Column("last_hash", Text),
    Column("records", BigInteger),
    Column("first_ns", BigInteger),  # its records' time span
    Column("last_ns", BigInteger),
)
