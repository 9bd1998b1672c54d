"""What OCSF and ECS renderings share: identities, the program, the command line, and our own
fields that neither schema has a place for (one list, both formats)."""

from __future__ import annotations

import errno as errno_module
import hashlib
import os
import shlex
import uuid

from .source import UNSET, Source

PRODUCT = "auditd-lite"
SEEN = "seen"  # a process running when a run started (query.seen_record): not an event
# uuid5 namespace of event uids: fixed forever, or every uid already handed out changes
EVENT_NAMESPACE = uuid.UUID("5b0c7a52-8f0e-5d7c-9a52-6f8d1e2c3b4a")


def boot_of(record: dict, source: Source) -> str | None:
    """The record's boot id: a search result carries its run's; a row straight from the daemon
    (query.row_to_record) has none yet, and its Source does."""
    return record.get("boot_id") or source.boot_id


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def event_uid(record: dict, source: Source) -> str:
    """A UUID that names this record whoever renders it and whenever: derived from the boot id
    and what makes the record unique within the boot (its type, thread, process start and time),
    never from a row id, which an export keeps but a file set aside and restarted would not.

    It is ``uuid.uuid5(EVENT_NAMESPACE, key)``, computed here without uuid.UUID's object, which
    is most of uuid5's time (tests/test_formats.py holds the two equal)."""
    b = bytearray(hashlib.sha1(_NAMESPACE_BYTES + event_key(record, source).encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_key(record: dict, source: Source) -> str:
    """What event_uid hashes: the boot, then the record's identity within it."""
    return "%s/%s/%s/%s/%s/%s" % (boot_of(record, source), record["event"], record["pid"],
                                  record.get("tid"), record.get("start_ns"), record["time_ns"])


def process_uid(record: dict, source: Source) -> str | None:
    """The process identity (docs/design.md, "Process identity") as one string: the exec and the
    exit of a process share it, a reused pid does not. None for a process seen at start, whose
    start time /proc gives to a clock tick only (its exit's would not match it)."""
    if record["event"] == SEEN:
        return None
    return f"{boot_of(record, source)}:{record['pid']}:{record.get('start_ns')}"


def parent_uid(record: dict, source: Source) -> str | None:
    """The parent's process identity in process_uid's form (the parent's own records give the
    same string): from ppid and the parent's start time, which records since schema revision
    0006 carry (rows.GATE_FIELDS); None before, and for a process seen at start."""
    start = record.get("parent_start_ns")
    if record["event"] == SEEN or start is None or record.get("ppid") is None:
        return None
    return f"{boot_of(record, source)}:{record['ppid']}:{start}"


def program(record: dict) -> tuple[str | None, list[str] | None]:
    """(filename, argv) of what the process ran: an exit's are its exec's (None when that exec
    was not recorded: the process started before capture)."""
    if record["event"] == "exit":
        return record.get("exec_filename"), record.get("exec_argv")
    return record.get("filename"), record.get("argv")


def command_line(argv: list[str] | None) -> str | None:
    """The arguments joined by spaces, each quoted as a POSIX shell would need (``''`` for an
    empty one, ``'a b'`` for one with a space): a plain command reads as it was typed, and no
    two argument lists give the same line."""
    if not argv:
        return None
    return " ".join(shlex.quote(arg) for arg in argv)


def basename(path: str) -> str:
    return os.path.basename(path) or path


def started_ns(record: dict) -> int | None:
    """When the process was forked, UTC ns, where the record says it exactly: an exit's time
    less its lifetime (both from the one kernel record, docs/design.md "Exit status recorded
    whole"). An exec's record has only the monotonic start (start_ns), not the wall clock."""
    if record["event"] == "exit" and record.get("duration_ns") is not None:
        return record["time_ns"] - record["duration_ns"]
    return None


def errno_name(record: dict) -> str | None:
    err = record.get("errno")
    if err is None:
        return None
    return record.get("errno_name") or errno_module.errorcode.get(abs(err), str(err))


def errno_text(record: dict) -> str | None:
    err = record.get("errno")
    return None if err is None else os.strerror(abs(err))


def session_id(record: dict) -> int | None:
    """The audit session id, None when the task has none (UNSET) or it was not recorded."""
    ses = record.get("sessionid")
    return None if ses is None or ses == UNSET else ses


# our own columns, in the order they are written, that neither OCSF nor ECS has a field for
# (the doc's mapping table lists each): kept whole under OCSF's ``unmapped`` and ECS's
# ``auditd_lite``, never dropped
OWN_FIELDS = ("event", "time_ns", "start_ns", "start_tick_ns", "old_pid", "sessionid", "cgroup_id", "argc",
              "args_truncated", "errno", "status", "signal", "core_dumped", "duration_ns",
              "cwd_status", "hash_status", "cgroup", "cgroup_status", "unit", "abi",
              "parent_start_ns")
# an exec's record carries how its process ended, when that is known: the exit's own event
# says it, so an exec's rendering does not (it would change once the process exits)
EXIT_FIELDS = frozenset(("status", "signal", "core_dumped", "duration_ns"))


def own_fields(record: dict, source: Source) -> dict:
    """The record's fields listed in OWN_FIELDS (those it has), and what its run and file say
    that no field holds: the run's loss counters and the file's schema revision."""
    skip = EXIT_FIELDS if record["event"] != "exit" else ()
    out = {k: record[k] for k in OWN_FIELDS if k not in skip and record.get(k) is not None}
    if source.lost_kernel is not None:
        out["run_lost_kernel"] = source.lost_kernel
    if source.lost_user is not None:
        out["run_lost_user"] = source.lost_user
    if source.revision is not None:
        out["schema_revision"] = source.revision
    if source.run_id is not None:
        out["run_id"] = source.run_id
    return out


def clean(obj: dict) -> dict:
    """``obj`` without its None values and empty objects, recursively (new dicts throughout):
    both schemas say absent, not null, for what is unknown."""
    out = {}
    for k, v in obj.items():
        if v is None:
            continue
        if type(v) is dict:
            v = clean(v)
            if not v:
                continue
        out[k] = v
    return out
