"""The field mapping, its one owner: what each Sigma field of the process_creation taxonomy is in
our records (docs/design.md, "Hunt: the field mapping").

An ``Event`` is one exec record seen through these names. Image and CommandLine, which nearly
every rule reads, are made at once; the others when a rule first asks for them, the parent's
fields through the parent lookup (hunt/parents.py), which costs queries.
"""

from __future__ import annotations

import pwd
from typing import Callable

# each field and what it is; a rule that reads a field not named here cannot be evaluated
FIELDS = {
    "Image": "the executed file's path, as the kernel resolved it (the exec's filename)",
    "CommandLine": "the arguments joined with spaces, unquoted, as Sysmon for Linux writes them",
    "ParentImage": "the parent process's executable at the exec: its latest exec before this "
                   "one, or what a daemon found it running at its start",
    "ParentCommandLine": "the parent process's arguments, from the same record as ParentImage",
    "CurrentDirectory": "the working directory at the exec (unknown when it was not recorded "
                        "whole: cwd_status other than ok, chroot, other_ns or deleted)",
    "User": "the name of the real uid, looked up on the host that hunts",
    "LogonId": "the login uid (auid; 4294967295 when the process has none)",
    "ProcessId": "the pid",
    "ParentProcessId": "the ppid",
    "Hashes": "SHA256=<the executable's SHA-256 in upper case>, as Sysmon writes it (unknown "
              "when it was not hashed)",
}
PARENT_FIELDS = frozenset(("ParentImage", "ParentCommandLine"))
# what the prefilter (hunt/prefilter.py) reads: made for every record
EAGER = ("Image", "CommandLine")
# what the hunt reads of every record, in this order, as SQL over the events table (a column a
# file lacks reads NULL: the context before revision 0003, the parent's start before 0006).
# Every record is read, the exits and failed execs for the parent lookup (hunt/parents.py); the
# event and the cwd's status come as numbers, and what only an exec's fields need only for
# execs, the cwd and hash as bytes decoded when a rule asks: the reading of every record is most
# of a hunt's time, and each text SQLite hands over is decoded by a Python call (dbfiles)
EXEC, EXIT, EXEC_FAILED = 1, 2, 3
# cwd statuses whose path is the whole directory (a truncated one is only its innermost names)
CWD_WHOLE = ("ok", "chroot", "other_ns", "deleted")
_IF_EXEC = "CASE WHEN event = 'exec' THEN {} END"
COLUMNS = (
    ("id", "id"), ("run_id", "run_id"),
    ("event", f"CASE event WHEN 'exec' THEN {EXEC} WHEN 'exit' THEN {EXIT} ELSE {EXEC_FAILED} END"),
    ("time_ns", "time_ns"), ("pid", "pid"), ("ppid", "ppid"), ("uid", "uid"), ("auid", "auid"),
    ("start_ns", "start_ns"), ("filename", _IF_EXEC.format("filename")),
    ("argv", _IF_EXEC.format("argv")), ("args_truncated", "args_truncated"),
    ("cwd", _IF_EXEC.format("CAST(cwd AS BLOB)")),
    ("cwd_status", "cwd_status IN (" + ", ".join(f"'{s}'" for s in CWD_WHOLE) + ")"),
    ("sha256", _IF_EXEC.format("CAST(sha256 AS BLOB)")), ("duration_ns", "duration_ns"),
    ("parent_start_ns", "parent_start_ns"),
)
(C_ID, C_RUN, C_EVENT, C_TIME, C_PID, C_PPID, C_UID, C_AUID, C_START, C_FILENAME, C_ARGV, C_TRUNCATED,
 C_CWD, C_CWD_WHOLE, C_SHA256, C_DURATION, C_PARENT_START) = range(len(COLUMNS))


def command_line(argv) -> str | None:
    """The arguments (the NUL-separated bytes the kernel gave) joined with spaces; bytes that
    are not UTF-8 escaped ``\\xNN``, as everywhere else. None for no arguments at all."""
    if argv is None:
        return None
    if isinstance(argv, str):
        argv = argv.encode("utf-8", "surrogateescape")
    return bytes(argv).replace(b"\0", b" ").decode("utf-8", "backslashreplace")


def _text(value) -> str | None:
    """A text column read as bytes (COLUMNS), decoded as dbfiles decodes text."""
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "backslashreplace")


class Users:
    """uid -> user name on this host, each looked up once (None: no such user here)."""

    def __init__(self):
        self._names: dict[int, str | None] = {}

    def name(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        if uid not in self._names:
            try:
                self._names[uid] = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError, ValueError):
                self._names[uid] = None
        return self._names[uid]


class Event:
    """One exec record (a row of COLUMNS) as Sigma's process_creation fields (FIELDS).
    ``find_parent()`` gives the parent (parents.Parent: its ``image`` and ``command_line``, None
    when unknown) when a rule first asks for one of its fields; it is kept as ``parent``."""

    __slots__ = ("row", "image", "cmd", "image_l", "cmd_l", "_users", "_find_parent", "parent",
                 "_values", "_lower", "_parent_l")

    def __init__(self, row: tuple, users: Users, find_parent: Callable):
        self.row = row
        self.image = image = row[C_FILENAME]
        argv = row[C_ARGV]
        # command_line(), inline: this runs for every exec
        self.cmd = cmd = (None if argv is None else
                          command_line(argv) if isinstance(argv, str) else
                          argv.replace(b"\0", b" ").decode("utf-8", "backslashreplace"))
        self.image_l = image.lower() if image is not None else None
        self.cmd_l = cmd.lower() if cmd is not None else None
        self._users = users
        self._find_parent = find_parent
        self.parent = None
        self._values: dict = {}
        self._lower: dict = {}
        self._parent_l = None  # (ParentImage, ParentCommandLine) lowered, once asked

    def get(self, field: str):
        """The field's value, None when unknown. KeyError for a field not in FIELDS."""
        if field == "Image":
            return self.image
        if field == "CommandLine":
            return self.cmd
        try:
            return self._values[field]
        except KeyError:
            pass
        row = self.row
        if field in PARENT_FIELDS:
            p = self.find_parent()
            self._values["ParentImage"], self._values["ParentCommandLine"] = p.image, p.command_line
            return self._values[field]
        if field == "CurrentDirectory":
            value = _text(row[C_CWD]) if row[C_CWD_WHOLE] else None
        elif field == "User":
            value = self._users.name(row[C_UID])
        elif field == "LogonId":
            value = row[C_AUID]
        elif field == "ProcessId":
            value = row[C_PID]
        elif field == "ParentProcessId":
            value = row[C_PPID]
        elif field == "Hashes":
            value = f"SHA256={_text(row[C_SHA256]).upper()}" if row[C_SHA256] else None
        else:
            raise KeyError(field)
        self._values[field] = value
        return value

    def find_parent(self):
        """The parent (looked up once)."""
        if self.parent is None:
            self.parent = self._find_parent(self)
        return self.parent

    def _parents_lowered(self) -> tuple:
        if self._parent_l is None:
            p = self.find_parent()
            image, cmd = p.image, p.command_line
            self._parent_l = (image.lower() if image is not None else None,
                              cmd.lower() if cmd is not None else None)
        return self._parent_l

    def parent_image_l(self) -> str | None:
        """lower("ParentImage"), without its dictionary: read by many rules, for many records."""
        return (self._parent_l or self._parents_lowered())[0]

    def parent_cmd_l(self) -> str | None:
        """lower("ParentCommandLine"), as parent_image_l."""
        return (self._parent_l or self._parents_lowered())[1]

    def lower(self, field: str) -> str | None:
        """The field's value as a lower-case string (numbers written in decimal), None when
        unknown: what case-insensitive Sigma strings are compared with."""
        if field == "Image":
            return self.image_l
        if field == "CommandLine":
            return self.cmd_l
        try:
            return self._lower[field]
        except KeyError:
            pass
        value = self.get(field)
        low = None if value is None else str(value).lower()
        self._lower[field] = low
        return low

    def unknown(self, fields) -> list[str]:
        """Those of ``fields`` (a rule's) that have no value here, in FIELDS order."""
        return [f for f in FIELDS if f in fields and self.get(f) is None]

    def incomplete(self, fields) -> list[str]:
        """Those of ``fields`` whose value is known to be cut short: the arguments beyond the
        capture's limits (args_truncated)."""
        return ["CommandLine"] if "CommandLine" in fields and self.row[C_TRUNCATED] else []
