"""The row a record becomes: its columns in the order the decoder builds them,
the writer inserts them and the chain hashes them.

The capture side (capture/records.py) makes these rows and the analysis side
reads them; both take the order from here. tests/test_records.py holds it to
the schema tables (storage/schema.py), the one description of the columns.
"""

from __future__ import annotations

# the columns of schema.events after id, run_id and batch_id, in its order: the tables are the
# one description, but the read side imports this without SQLAlchemy, so it is a copy that
# tests/test_records.py holds to them (and Decoder.decode builds its tuples in this order)
#
# CAPTURED_FIELDS are what the kernel's record gives (capture/records.py decodes them);
# CONTEXT_FIELDS (schema revision 0003) the context of an exec or failed exec: first
# CWD_FIELDS, which the kernel's record gives too (the decoder makes them, so a decoded row
# is DECODED_FIELDS), then SYSTEM_FIELDS, which user space adds from the system
# (capture/context.py). NULL for an exit, and in a file older than 0003, where the columns
# do not exist, unknown.
CAPTURED_FIELDS = (
    "event", "time_ns", "pid", "tid", "ppid", "uid", "gid", "comm", "start_ns",
    "old_pid", "euid", "auid", "sessionid", "cgroup_id", "filename", "argv", "argc",
    "args_truncated", "errno", "status", "exit_code", "signal", "core_dumped", "duration_ns",
)
CWD_FIELDS = ("cwd", "cwd_status")
SYSTEM_FIELDS = ("sha256", "hash_status", "cgroup", "cgroup_status", "unit", "container_id")
CONTEXT_FIELDS = CWD_FIELDS + SYSTEM_FIELDS
DECODED_FIELDS = CAPTURED_FIELDS + CWD_FIELDS
ROW_FIELDS = CAPTURED_FIELDS + CONTEXT_FIELDS
F_EVENT, F_TIME = ROW_FIELDS.index("event"), ROW_FIELDS.index("time_ns")
F_FILENAME, F_ARGV, F_ARGS_TRUNCATED, F_ERRNO = (
    ROW_FIELDS.index(f) for f in ("filename", "argv", "args_truncated", "errno"))
F_EXIT_CODE, F_SIGNAL, F_DURATION = (ROW_FIELDS.index(f) for f in ("exit_code", "signal", "duration_ns"))
F_PID, F_COMM, F_START, F_CGROUP_ID, F_CWD, F_CWD_STATUS = (ROW_FIELDS.index(f) for f in (
    "pid", "comm", "start_ns", "cgroup_id", "cwd", "cwd_status"))
