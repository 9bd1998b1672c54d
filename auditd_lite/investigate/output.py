"""Records as table lines (the libbpf bootstrap layout), JSON lines or CSV.

Every string that came from the kernel (comm, filename, argv) is logged
data an attacker may have chosen, so table and CSV show it shell-quoted with
control characters escaped: printing a record never drives the terminal.
"""

from __future__ import annotations

import csv
import errno as errno_module
import json
import shlex
import time
from typing import Iterable

try:
    import orjson
except ImportError as e:  # a tree of another Python's wheels (build-deb.sh's man page): json's path
    orjson = None
    JSON_LINES = f"json ({e})"
else:
    JSON_LINES = "orjson"  # which writes the JSON lines: the daemon logs it, the package checks it

from ..errors import BadInput
from ..formats import ecs, ocsf
from ..rows import CONTEXT_FIELDS, GATE_FIELDS

TABLE_HEADER = "%-8s %-5s %-16s %-7s %-7s %s" % ("TIME", "EVENT", "COMM", "PID", "PPID", "FILENAME/EXIT CODE")
_LABELS = {"exec": "EXEC", "exit": "EXIT", "exec_failed": "FAIL"}

CSV_COLUMNS = [
    "time", "event", "pid", "tid", "ppid", "uid", "gid", "comm", "filename", "argv",
    "exit_code", "signal", "core_dumped", "duration_ns", "errno", "errno_name",
] + list(CONTEXT_FIELDS + GATE_FIELDS)
# names a cgroup path gives: whoever may create a cgroup (a delegated subtree, a container)
# chose them, so they are quoted like comm
_CHOSEN = {"comm", "cgroup", "unit", "container_id"}
SHORT_ID = 12  # a container id as docker shows it


def quote(text) -> str:
    """Shell-quote ``text``; with non-printable characters, as bash ``$'...'`` with ``\\xNN`` escapes."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return shlex.quote(text)
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:  # \xNN would mean a raw byte, not this character
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "$'" + "".join(out) + "'"


def _command(filename, argv) -> str:
    """Filename then arguments, each quoted; ``?`` when the filename was not captured."""
    parts = [quote(filename) if filename is not None else "?"]
    parts += [quote(arg) for arg in argv or ()]
    return " ".join(parts)


def _errno_name(record: dict):
    name = record.get("errno_name")
    if name is None and record.get("errno") is not None:
        name = errno_module.errorcode.get(abs(record["errno"]), str(record["errno"]))
    return name


def short_container(cid: str) -> str:
    """A runtime's 64-hex container id cut to docker's 12; a machine name stays whole."""
    if len(cid) == 64 and all(c in "0123456789abcdef" for c in cid):
        return cid[:SHORT_ID]
    return cid


def where_ran(record: dict) -> str:
    """`` [container ID]`` or `` [UNIT]`` after a table line, or nothing when neither is
    known: the container says more than its scope unit (docker-ID.scope), so it wins."""
    cid = record.get("container_id")
    if cid:
        return f" [container {quote(short_container(cid))}]"
    unit = record.get("unit")
    return f" [{quote(unit)}]" if unit else ""


def through_gate(record: dict) -> str:
    """`` [ia32]`` or `` [x32]`` after a table line when the exec came through a 32-bit gate
    (int $0x80 from a 64-bit program is the classic way around b64-only audit rules); nothing
    for the native gate or when it is unknown."""
    abi = record.get("abi")
    return f" [{abi}]" if abi in ("ia32", "x32") else ""


def format_event_line(record: dict) -> str:
    """One table line: ``TIME EVENT COMM PID PPID`` then command, exit status or errno, then
    a 32-bit gate (through_gate) and where it ran (where_ran): last, so the columns stay those
    of the bootstrap layout."""
    event = record.get("event")
    clock = time.strftime("%H:%M:%S", time.localtime(record["time_ns"] // 10**9))
    if event == "exit":
        code = record.get("exit_code")
        detail = f"[{'?' if code is None else code}]"
        if record.get("signal"):
            detail += f" signal {record['signal']}"
        if record.get("core_dumped"):
            detail += " (core dumped)"
        if record.get("duration_ns"):
            detail += f" ({record['duration_ns'] // 1_000_000}ms)"
    else:
        detail = _command(record.get("filename"), record.get("argv"))
        if event == "exec_failed":
            detail += f" [{_errno_name(record)}]"
    return "%-8s %-5s %-16s %-7d %-7d %s" % (
        clock, _LABELS.get(event, str(event)[:5].upper()), quote(record.get("comm")),
        record.get("pid") or 0, record.get("ppid") or 0, detail + through_gate(record) + where_ran(record),
    )


def _csv_row(record: dict) -> list:
    filename, argv = record.get("filename"), record.get("argv")
    if record.get("event") == "exit":  # one flat row: show what the process was running
        filename, argv = record.get("exec_filename"), record.get("exec_argv")
    row = []
    for column in CSV_COLUMNS:
        if column in _CHOSEN:
            value = quote(record.get(column))
        elif column == "filename":
            value = quote(filename)
        elif column == "argv":
            value = " ".join(quote(arg) for arg in argv or ())
        elif column == "errno_name":
            value = _errno_name(record)
        else:
            value = record.get(column)
        row.append(int(value) if isinstance(value, bool) else value)
    return row


class TextOut:
    """Writes text, escaping what the stream's encoding cannot hold rather than failing."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def _jsonable(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


FORMATS = ("table", "json", "csv")
# records only: each record as an OCSF event or an ECS document a line (formats/), rendered
# from (record, formats.Source) pairs, which query.search(..., sources=True) yields
SCHEMA_FORMATS = ("ocsf", "ecs")
RECORD_FORMATS = FORMATS + SCHEMA_FORMATS


# orjson writes what json.dumps writes with these separators and ensure_ascii off, five to eight
# times faster (bench/render.py); what it refuses (an integer beyond 64 bits, a lone surrogate) is
# written by json, the same way. Datetimes and dataclasses go to _jsonable as they do with json.
_SEPARATORS = (",", ":")
if orjson is not None:
    _ORJSON = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    _REFUSED = (orjson.JSONEncodeError, TypeError)


def _orjson(obj) -> bytes | None:
    """orjson's line of ``obj``, or None where orjson refuses it or is not there."""
    if orjson is None:
        return None
    try:
        return orjson.dumps(obj, default=_jsonable, option=_ORJSON)
    except _REFUSED:
        return None


def json_bytes(obj) -> bytes:
    """``obj`` as one JSON line (with its newline) in UTF-8; a string that UTF-8 cannot hold (a
    lone surrogate) is written with JSON's own escapes (ASCII), which keeps the line valid. The one
    serialization of the JSON-lines formats: query's, export's, hunt's and the daemon's stream."""
    line = _orjson(obj)
    if line is not None:
        # copied to a bytes object of its own size: orjson's, grown and then shrunk in place,
        # keeps the heap it grew into while the line is held, and the stream holds a batch
        # of them (900 lines held: 13 MiB of heap against json's 2.7; copied, 2.3)
        return bytes(memoryview(line))
    try:
        return _json_text(obj, False).encode("utf-8")
    except UnicodeEncodeError:
        return _json_text(obj, True).encode("ascii")


def _json_text(obj, ascii_only: bool) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only, separators=_SEPARATORS, default=_jsonable) + "\n"


def json_line(obj, ascii_only: bool = False) -> str:
    """``obj`` as one JSON line (with its newline), as json_bytes writes it; ``ascii_only``:
    every character beyond ASCII as JSON's escape. Bytes are decoded with escapes, as everywhere
    else."""
    line = None if ascii_only else _orjson(obj)
    return line.decode("utf-8") if line is not None else _json_text(obj, ascii_only)


def write_json_line(obj, stream) -> None:
    """One JSON object a line (json_line) on a text stream."""
    try:
        stream.write(json_line(obj))
    except UnicodeEncodeError:  # an ASCII-only stream: JSON's own escapes keep it valid
        stream.write(json_line(obj, ascii_only=True))


def write_formatted(items: Iterable, fmt: str, stream, *, as_json, csv_header: list, as_csv,
                    table, as_lines: dict | None = None) -> int:
    """The one switch between the output formats (FORMATS, and the keys of ``as_lines``);
    return how many items were written.

    ``as_json(item)`` is the object of its line, ``as_csv(item)`` its row under ``csv_header``
    (written even with no rows: a script still gets valid CSV), and ``table(items, out)`` writes
    the table itself and returns its count. ``as_lines[fmt](item)``: the object of its line in
    one more JSON-lines format (SCHEMA_FORMATS).
    """
    out = TextOut(stream)
    count = 0
    as_lines = as_lines or {}
    if fmt == "json" or fmt in as_lines:
        render = as_json if fmt == "json" else as_lines[fmt]
        for item in items:
            write_json_line(render(item), stream)
            count += 1
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(csv_header)
        for item in items:
            writer.writerow(as_csv(item))
            count += 1
    elif fmt == "table":
        count = table(items, out)
    else:
        known = FORMATS + tuple(as_lines)
        raise BadInput(f"bad format {fmt!r}: use {', '.join(known[:-1])} or {known[-1]}")
    return count


def _record_table(records: Iterable[dict], out: TextOut) -> int:
    count = 0
    for record in records:
        if count == 0:  # no lone header when nothing matched
            out.write(TABLE_HEADER + "\n")
        out.write(format_event_line(record) + "\n")
        count += 1
    return count


# the line of a (record, formats.Source) pair in each of SCHEMA_FORMATS
SCHEMA_LINES = {"ocsf": lambda pair: ocsf.event(*pair), "ecs": lambda pair: ecs.document(*pair)}


def write_records(records: Iterable, fmt: str, stream) -> int:
    """Write ``records`` as ``table``, ``json`` (one object a line) or ``csv``, or as ``ocsf`` or
    ``ecs`` (one event a line), for which each item is a (record, formats.Source) pair; return
    how many."""
    return write_formatted(records, fmt, stream, as_json=lambda r: r, csv_header=CSV_COLUMNS,
                           as_csv=_csv_row, table=_record_table, as_lines=SCHEMA_LINES)
