"""A record as an OCSF 1.8.0 Process Activity event (class_uid 1007).

exec: Launch, status Success; exec_failed: Launch, status Failure with the errno; exit:
Terminate with ``exit_code``. The mapping, column by column, is docs/design.md "OCSF and ECS";
tests/test_formats.py validates every event against the published schema of this version
(tests/data/ocsf/, made by scripts/ocsf_schema.py).
"""

from __future__ import annotations

from functools import lru_cache

from ..timeparse import format_time_ns
from . import common
from .source import Source

OCSF_VERSION = "1.8.0"
# the profiles whose attributes the events use: datetime (the *_dt times, to the nanosecond),
# linux/linux_users (euid, auid, group), container
PROFILES = ("container", "datetime", "linux/linux_users")

CLASS_UID, CLASS_NAME = 1007, "Process Activity"
CATEGORY_UID, CATEGORY_NAME = 1, "System Activity"
LAUNCH, TERMINATE = 1, 2
ACTIVITY_NAMES = {LAUNCH: "Launch", TERMINATE: "Terminate"}
ACTIVITIES = {"exec": LAUNCH, "exec_failed": LAUNCH, "exit": TERMINATE}
SUCCESS, FAILURE = 1, 2
SEVERITY_INFORMATIONAL = 1
DEVICE_TYPE_UNKNOWN, OS_TYPE_LINUX = 0, 200
FILE_TYPE_REGULAR = 1
SHA256 = 3  # fingerprint.algorithm_id


def _ms(ns: int | None) -> int | None:
    """timestamp_t: whole milliseconds since the epoch (floor, so a time never moves later)."""
    return None if ns is None else ns // 1_000_000


@lru_cache(maxsize=256)  # once per source: the event's clean() copies what it takes
def _device(source: Source) -> dict:
    return common.clean({
        "type_id": DEVICE_TYPE_UNKNOWN, "type": "Unknown",
        "hostname": source.host, "name": source.host, "boot_uid": source.boot_id,
        "os": {"name": "Linux", "type_id": OS_TYPE_LINUX, "type": "Linux",
               "kernel_release": source.kernel},
    })


@lru_cache(maxsize=256)
def _product(source: Source) -> dict:
    return common.clean({"name": common.PRODUCT, "vendor_name": common.PRODUCT,
                         "version": source.version})


def _file(path: str | None, record: dict) -> dict | None:
    if path is None:
        return None
    sha256 = record.get("sha256")
    return common.clean({
        "name": common.basename(path), "path": path, "type_id": FILE_TYPE_REGULAR,
        "type": "Regular File",
        "hashes": [{"algorithm_id": SHA256, "algorithm": "SHA-256", "value": sha256}] if sha256 else None,
    })


def _process(record: dict, source: Source) -> dict:
    filename, argv = common.program(record)
    started = common.started_ns(record)
    ended = record["time_ns"] if record["event"] == "exit" else None
    session = common.session_id(record)
    container = record.get("container_id")
    return {
        "pid": record["pid"], "tid": record.get("tid"), "uid": common.process_uid(record, source),
        "name": record.get("comm"), "path": filename, "cmd_line": common.command_line(argv),
        "file": _file(filename, record),
        "created_time": _ms(started), "created_time_dt": None if started is None else format_time_ns(started),
        "terminated_time": _ms(ended), "terminated_time_dt": None if ended is None else format_time_ns(ended),
        "user": {"uid": str(record["uid"])} if record.get("uid") is not None else None,
        "group": {"uid": str(record["gid"])} if record.get("gid") is not None else None,
        "euid": record.get("euid"), "auid": record.get("auid"),
        "session": {"uid": str(session)} if session is not None else None,
        "parent_process": {"pid": record["ppid"]} if record.get("ppid") is not None else None,
        "working_directory": record.get("cwd"),
        "container": {"uid": container} if container else None,
    }


def _actor(record: dict, process: dict) -> dict:
    """Who asked: for a launch the parent (a fork's child runs the exec, and the parent is what
    OCSF consumers look for as the launcher), for an exit the process itself (OCSF's reflexive
    Terminate; a killer is not recorded)."""
    user = process.get("user")
    if record["event"] == "exit":
        me = {k: process.get(k) for k in ("pid", "tid", "uid", "name", "path", "cmd_line", "user",
                                          "parent_process")}
        return {"process": me, "user": user}
    return {"process": process.get("parent_process"), "user": user}


def event(record: dict, source: Source) -> dict:
    """The OCSF Process Activity event of ``record`` (a dict as ``investigate.query.search``
    yields), with ``source`` the facts of its run and file. Absent attributes are left out, never
    null. Raises KeyError on a record without ``event``, ``pid`` or ``time_ns``."""
    kind = record["event"]
    activity = ACTIVITIES[kind]
    failed = kind == "exec_failed"
    process = _process(record, source)
    unmapped = common.own_fields(record, source)
    if kind != "exit":
        # OCSF's process has no argument list: the exact one, arguments kept apart
        filename, argv = common.program(record)
        unmapped["argv"] = argv
    return common.clean({
        "class_uid": CLASS_UID, "class_name": CLASS_NAME,
        "category_uid": CATEGORY_UID, "category_name": CATEGORY_NAME,
        "activity_id": activity, "activity_name": ACTIVITY_NAMES[activity],
        "type_uid": CLASS_UID * 100 + activity,
        "type_name": f"{CLASS_NAME}: {ACTIVITY_NAMES[activity]}",
        "severity_id": SEVERITY_INFORMATIONAL, "severity": "Informational",
        "time": _ms(record["time_ns"]), "time_dt": format_time_ns(record["time_ns"]),
        "status_id": FAILURE if failed else SUCCESS, "status": "Failure" if failed else "Success",
        "status_code": common.errno_name(record) if failed else None,
        "status_detail": common.errno_text(record) if failed else None,
        "exit_code": record.get("exit_code") if kind == "exit" else None,
        "metadata": {
            "version": OCSF_VERSION, "profiles": list(PROFILES), "product": _product(source),
            "uid": common.event_uid(record, source), "event_code": kind,
            "log_provider": common.PRODUCT, "log_version": source.revision,
        },
        "device": _device(source),
        "actor": _actor(record, process),
        "process": process,
        "unmapped": unmapped,
    })
