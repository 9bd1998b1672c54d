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
#
# GATE_FIELDS (revision 0006) the kernel's record gives too, after the context because SQLite
# appends a column: the gate an exec came through (ABI_NAMES; NULL for an exit and where the
# entry was not seen) and the parent's start time, which with ppid and the boot names the parent
# process exactly (docs/design.md, "Process identity"). The decoder makes them last, and the
# context is put in before them (capture/context.py). In a file older than 0006: unknown.
CAPTURED_FIELDS = (
    "event", "time_ns", "pid", "tid", "ppid", "uid", "gid", "comm", "start_ns",
    "old_pid", "euid", "auid", "sessionid", "cgroup_id", "filename", "argv", "argc",
    "args_truncated", "errno", "status", "exit_code", "signal", "core_dumped", "duration_ns",
)
CWD_FIELDS = ("cwd", "cwd_status")
SYSTEM_FIELDS = ("sha256", "hash_status", "cgroup", "cgroup_status", "unit", "container_id")
CONTEXT_FIELDS = CWD_FIELDS + SYSTEM_FIELDS
GATE_FIELDS = ("abi", "parent_start_ns")
# the abi column's values, what query --abi takes (capture/records.py ABI_WORDS makes them)
ABI_NAMES = ("x64", "ia32", "x32")
DECODED_FIELDS = CAPTURED_FIELDS + CWD_FIELDS + GATE_FIELDS
ROW_FIELDS = CAPTURED_FIELDS + CONTEXT_FIELDS + GATE_FIELDS
# where the context goes into a decoded row: after the working directory, before GATE_FIELDS
CONTEXT_AT = len(CAPTURED_FIELDS + CWD_FIELDS)
# what an exit shows of the exec of its process, having none of its own: the context and the gate
BORROWED_FIELDS = CONTEXT_FIELDS + ("abi",)
# the columns a file may lack, added at revisions 0003 and 0006: read as NULL (unknown)
LATER_FIELDS = CONTEXT_FIELDS + GATE_FIELDS
F_EVENT, F_TIME = ROW_FIELDS.index("event"), ROW_FIELDS.index("time_ns")
F_FILENAME, F_ARGV, F_ARGS_TRUNCATED, F_ERRNO = (
    ROW_FIELDS.index(f) for f in ("filename", "argv", "args_truncated", "errno"))
F_EXIT_CODE, F_SIGNAL, F_DURATION = (ROW_FIELDS.index(f) for f in ("exit_code", "signal", "duration_ns"))
F_PID, F_COMM, F_START, F_CGROUP_ID, F_CWD, F_CWD_STATUS = (ROW_FIELDS.index(f) for f in (
    "pid", "comm", "start_ns", "cgroup_id", "cwd", "cwd_status"))
