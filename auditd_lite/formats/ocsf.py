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
LAUNCH, TERMINATE, OTHER = 1, 2, 99
# Other's name is ours to give (OCSF: "a data source specific value")
ACTIVITY_NAMES = {LAUNCH: "Launch", TERMINATE: "Terminate", OTHER: "Running at start"}
ACTIVITIES = {"exec": LAUNCH, "exec_failed": LAUNCH, "exit": TERMINATE, common.SEEN: OTHER}
SUCCESS, FAILURE = 1, 2
SEVERITY_INFORMATIONAL = 1
DEVICE_TYPE_UNKNOWN, OS_TYPE_LINUX = 0, 200
FILE_TYPE_REGULAR = 1
SHA256 = 3  # fingerprint.algorithm_id


# timestamp_t is whole milliseconds since the epoch: ns // 1_000_000 (floor, so a time never
# moves later); the *_dt attributes (datetime profile) carry every nanosecond


@lru_cache(maxsize=1024)
def _template(kind: str, source: Source) -> dict:
    """Everything of an event that only its type and its source decide, without None: made once
    per (type, source); event() copies it (_copy) and adds the record's own."""
    activity = ACTIVITIES[kind]
    failed = kind == "exec_failed"
    return common.clean({
        "class_uid": CLASS_UID, "class_name": CLASS_NAME,
        "category_uid": CATEGORY_UID, "category_name": CATEGORY_NAME,
        "activity_id": activity, "activity_name": ACTIVITY_NAMES[activity],
        "type_uid": CLASS_UID * 100 + activity,
        "type_name": f"{CLASS_NAME}: {ACTIVITY_NAMES[activity]}",
        "severity_id": SEVERITY_INFORMATIONAL, "severity": "Informational",
        # a process seen at start is an observation, not an activity that succeeded or failed
        "status_id": None if activity == OTHER else FAILURE if failed else SUCCESS,
        "status": None if activity == OTHER else "Failure" if failed else "Success",
        "metadata": {
            "version": OCSF_VERSION, "profiles": list(PROFILES),
            "product": {"name": common.PRODUCT, "vendor_name": common.PRODUCT, "version": source.version},
            "event_code": kind, "log_provider": common.PRODUCT, "log_version": source.revision,
        },
        "device": {
            "type_id": DEVICE_TYPE_UNKNOWN, "type": "Unknown",
            "hostname": source.host, "name": source.host, "boot_uid": source.boot_id,
            "os": {"name": "Linux", "type_id": OS_TYPE_LINUX, "type": "Linux",
                   "kernel_release": source.kernel},
        },
    })


def _copy(template: dict) -> dict:
    """A copy of a template that shares nothing mutable with it (its objects are two deep, its
    one list is the profiles')."""
    out = dict(template)
    md = out["metadata"] = dict(template["metadata"])
    md["product"] = dict(md["product"])
    md["profiles"] = list(md["profiles"])
    dev = out["device"] = dict(template["device"])
    dev["os"] = dict(dev["os"])
    return out


def _file(path: str, record: dict) -> dict:
    out = {"name": common.basename(path), "path": path, "type_id": FILE_TYPE_REGULAR,
           "type": "Regular File"}
    sha256 = record.get("sha256")
    if sha256:
        out["hashes"] = [{"algorithm_id": SHA256, "algorithm": "SHA-256", "value": sha256}]
    return out


def _process(record: dict, source: Source, kind: str) -> dict:
    """The process object; only what is known (the schema says absent, never null)."""
    p = {"pid": record["pid"]}
    get = record.get
    for ours, theirs in (("tid", "tid"), ("comm", "name"), ("euid", "euid"), ("auid", "auid"),
                         ("cwd", "working_directory")):
        value = get(ours)
        if value is not None:
            p[theirs] = value
    uid = common.process_uid(record, source)
    if uid is not None:
        p["uid"] = uid
    filename, argv = common.program(record)
    if filename is not None:
        p["path"] = filename
        p["file"] = _file(filename, record)
    if argv:
        p["cmd_line"] = common.command_line(argv)
    started = common.started_ns(record)
    if started is not None:
        p["created_time"] = started // 1_000_000
        p["created_time_dt"] = format_time_ns(started)
    if kind == "exit":
        p["terminated_time"] = record["time_ns"] // 1_000_000
        p["terminated_time_dt"] = format_time_ns(record["time_ns"])
    if get("uid") is not None:
        p["user"] = {"uid": str(record["uid"])}
    if get("gid") is not None:
        p["group"] = {"uid": str(record["gid"])}
    session = common.session_id(record)
    if session is not None:
        p["session"] = {"uid": str(session)}
    if get("ppid") is not None:
        p["parent_process"] = {"pid": record["ppid"]}
        parent = common.parent_uid(record, source)
        if parent is not None:
            p["parent_process"]["uid"] = parent
    if get("container_id"):
        p["container"] = {"uid": record["container_id"]}
    return p


def process(record: dict, source: Source) -> dict:
    """The process object of ``record``, as event() puts it under ``process``: for the other
    classes that carry a process (hunt's Detection Finding, formats/finding.py)."""
    return _process(record, source, record["event"])


def device(source: Source) -> dict:
    """The device object of a record of ``source``, as event() puts it under ``device``."""
    return _copy(_template("exec", source))["device"]


_ACTOR_KEYS = ("pid", "tid", "uid", "name", "path", "cmd_line", "user", "parent_process")


def _actor(kind: str, process: dict) -> dict:
    """Who asked: for a launch the parent (a fork's child runs the exec, and the parent is what
    OCSF consumers look for as the launcher), for an exit the process itself (OCSF's reflexive
    Terminate; a killer is not recorded)."""
    if kind == "exit":
        me = {k: process[k] for k in _ACTOR_KEYS if k in process}
    else:
        me = process.get("parent_process")
    actor = {}
    if me:
        actor["process"] = dict(me)
    if "user" in process:
        actor["user"] = dict(process["user"])
    return actor


def event(record: dict, source: Source) -> dict:
    """The OCSF Process Activity event of ``record`` (a dict as ``investigate.query.search``
    yields, or ``query.seen_record``'s for a process seen at start: activity Other), with
    ``source`` the facts of its run and file. Absent attributes are left out, never null; the
    event shares no object with the record, the source or another event.
    Raises KeyError on a record without ``event``, ``pid`` or ``time_ns``."""
    kind = record["event"]
    ev = _copy(_template(kind, source))
    t = record["time_ns"]
    ev["time"] = t // 1_000_000
    ev["time_dt"] = format_time_ns(t)
    if kind == "exec_failed" and record.get("errno") is not None:
        ev["status_code"] = common.errno_name(record)
        ev["status_detail"] = common.errno_text(record)
    elif kind == "exit" and record.get("exit_code") is not None:
        ev["exit_code"] = record["exit_code"]
    ev["metadata"]["uid"] = common.event_uid(record, source)
    process = _process(record, source, kind)
    ev["actor"] = _actor(kind, process)
    ev["process"] = process
    unmapped = common.own_fields(record, source)
    if kind != "exit":
        # OCSF's process has no argument list: the exact one, arguments kept apart
        argv = record.get("argv")
        if argv is not None:
            unmapped["argv"] = list(argv)
    ev["unmapped"] = unmapped
    return ev
