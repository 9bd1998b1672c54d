"""A record as an Elastic Common Schema document, with the field names of Auditbeat's process
dataset (``process.*``, ``user.*``, ``host.*``, ``event.*``).

exec: ``event.type [start]``, outcome success; exec_failed: ``[start]``, outcome failure, the
errno in ``error.*``; exit: ``[end]`` with ``process.exit_code``. Our own fields ECS has no place
for are under ``auditd_lite`` (a custom field set, as ECS asks: never a name ECS may take). The
mapping is docs/design.md "OCSF and ECS".
"""

from __future__ import annotations

from functools import lru_cache

from ..timeparse import format_time_ns
from . import common
from .source import Source

ECS_VERSION = "8.11.0"
# Auditbeat's system/process dataset's words for a start and an end
ACTIONS = {"exec": "process_started", "exec_failed": "process_started", "exit": "process_stopped",
           common.SEEN: "existing_process"}
TYPES = {"exec": "start", "exec_failed": "start", "exit": "end", common.SEEN: "info"}


@lru_cache(maxsize=256)  # once per source: the document's clean() copies what it takes
def _host(source: Source) -> dict:
    return common.clean({
        "name": source.host, "hostname": source.host, "boot": {"id": source.boot_id},
        "os": {"type": "linux", "family": "linux", "kernel": source.kernel},
    })


@lru_cache(maxsize=256)
def _agent(source: Source) -> dict:
    return common.clean({"type": common.PRODUCT, "version": source.version})


def _outcome(record: dict) -> str | None:
    kind = record["event"]
    if kind == common.SEEN:
        return None  # an observation, not an outcome
    if kind == "exec_failed":
        return "failure"
    if kind == "exit":
        if record.get("exit_code") is None:
            return "unknown"
        return "success" if record["exit_code"] == 0 and not record.get("signal") else "failure"
    return "success"


def document(record: dict, source: Source) -> dict:
    """The ECS document of ``record`` (a dict as ``investigate.query.search`` yields, or
    ``query.seen_record``'s: Auditbeat's ``existing_process``), with ``source`` the facts of its
    run and file. Unknown fields are left out, never null."""
    kind = record["event"]
    filename, argv = common.program(record)
    started = common.started_ns(record)
    exited = kind == "exit"
    doc = common.clean({
        "@timestamp": format_time_ns(record["time_ns"]),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event", "category": ["process"], "type": [TYPES[kind]],
            "action": ACTIONS[kind], "outcome": _outcome(record),
            "id": common.event_uid(record, source), "module": "auditd_lite",
            "dataset": "auditd_lite.process",
            "duration": record.get("duration_ns") if exited else None,
        },
        "process": {
            "pid": record["pid"], "entity_id": common.process_uid(record, source),
            "name": record.get("comm"), "executable": filename,
            "args": None if argv is None else list(argv),
            "args_count": len(argv) if argv is not None else None,
            "command_line": common.command_line(argv),
            "working_directory": record.get("cwd"),
            "parent": {"pid": record.get("ppid"), "entity_id": common.parent_uid(record, source)},
            "thread": {"id": record.get("tid")},
            "hash": {"sha256": record.get("sha256")},
            "start": None if started is None else format_time_ns(started),
            "end": format_time_ns(record["time_ns"]) if exited else None,
            "exit_code": record.get("exit_code") if exited else None,
        },
        "user": {
            "id": None if record.get("uid") is None else str(record["uid"]),
            "group": {"id": None if record.get("gid") is None else str(record["gid"])},
            "effective": {"id": None if record.get("euid") is None else str(record["euid"])},
            # the login uid as Auditbeat's auditd module names it (not a field of ECS itself)
            "audit": {"id": None if record.get("auid") is None else str(record["auid"])},
        },
        "error": {"code": common.errno_name(record), "message": common.errno_text(record)}
        if kind == "exec_failed" else None,
        "container": {"id": record.get("container_id")},
    })
    # made once per source, already without None: copied, not cleaned again
    host = _host(source)
    if host:
        host = doc["host"] = dict(host)
        for key in ("boot", "os"):
            if key in host:
                host[key] = dict(host[key])
    doc["agent"] = dict(_agent(source))
    doc["auditd_lite"] = common.own_fields(record, source)  # made without None
    return doc
