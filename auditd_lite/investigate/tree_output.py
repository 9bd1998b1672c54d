"""`auditd-lite tree`'s output: a process's line, the tree drawn as text, and as JSON (tree.py
builds the tree)."""

from __future__ import annotations

import errno as errno_module
import json
from typing import TYPE_CHECKING

from ..rows import CONTEXT_FIELDS
from .output import quote, where_ran
from ..timeparse import format_duration, format_time

if TYPE_CHECKING:
    from .tree import Proc, Tree


def context_of(p: "Proc") -> dict:
    """The context of the program its line shows (_command): its last exec's, else what a
    daemon found it running, else its last failed exec's (a cgroup, no hash)."""
    if p.execs:
        return p.execs[-1]["context"]
    if p.seen is not None:
        return p.seen["context"]
    return p.failed[-1]["context"] if p.failed else dict.fromkeys(CONTEXT_FIELDS)


def _when(ns: int | None) -> str:
    if ns is None:
        return "?"
    return format_time(ns)[:23] + "Z"  # milliseconds


def _status(p: Proc) -> str:
    e = p.exit
    if e is None:
        return "no exit recorded"
    if e["signal"]:
        text = f"killed by signal {e['signal']}"
        try:
            import signal as signal_module

            text += f" ({signal_module.Signals(e['signal']).name})"
        except ValueError:
            pass
        return text + (", core dumped" if e["core_dumped"] else "")
    return f"exit {e['exit_code']}"


def _command(p: Proc) -> str:
    if p.execs:
        last = p.execs[-1]
        cmd = " ".join([quote(last["filename"]) if last["filename"] is not None else "?"]
                       + [quote(a) for a in last["argv"]])
        if len(p.execs) > 1:
            cmd += f" (after {len(p.execs) - 1} earlier exec{'s' if len(p.execs) > 2 else ''})"
        return cmd
    if p.seen is not None:
        parts = [quote(a) for a in p.seen["argv"]] or [quote(p.seen["filename"] or "?")]
        return " ".join(parts) + " [running when a daemon started]"
    return "(no exec recorded)"


def describe(p: Proc) -> str:
    parts = [str(p.pid), quote(p.comm or "?"), _command(p) + where_ran(context_of(p))]
    if p.failed:
        names = sorted({errno_module.errorcode.get(abs(f["errno"] or 0), str(f["errno"])) for f in p.failed})
        parts.append(f"({len(p.failed)} failed exec{'s' if len(p.failed) > 1 else ''}: "
                     f"{quote(p.failed[-1]['filename'])} {'/'.join(names)})")
    life = format_duration(p.exit["duration_ns"]) if p.exit is not None else ""
    parts.append(f"[{_when(p.fork_ns)}{' +' + life if life else ''} {_status(p)}]")
    return " ".join(parts)


def render_table(tree: Tree, stream) -> None:
    unicode = (getattr(stream, "encoding", None) or "").lower().replace("-", "") in ("utf8", "utf16", "utf32")
    tee, last, pipe, blank = ("├─ ", "└─ ", "│  ", "   ") if unicode else ("|- ", "`- ", "|  ", "   ")
    mark = "  ◀ target" if unicode else "  <== target"
    t = tree.target
    stream.write(f"pid {t.pid}, boot {t.boot_id}, started {_when(t.fork_ns)}\n")
    if not tree.complete_ancestry:
        top = tree.root
        stream.write(f"(parent pid {top.ppid} of {top.pid} was not recorded: ancestry starts here)\n")
    stack = [(tree.root, "", "", True)]
    while stack:
        node, prefix, connector, _ = stack.pop()
        stream.write(prefix + connector + describe(node) + (mark if node.target else "") + "\n")
        child_prefix = prefix + ((blank if connector in (last, "") else pipe) if connector else "")
        kids = node.children
        for j in range(len(kids) - 1, -1, -1):
            stack.append((kids[j], child_prefix, last if j == len(kids) - 1 else tee, False))
    if tree.truncated:
        stream.write(f"(cut at {tree.nodes} processes: use --depth to see less at a time)\n")


def _node_json(p: Proc) -> dict:
    return {
        "pid": p.pid, "ppid": p.ppid, "boot_id": p.boot_id, "start_ns": p.start_ns,
        "start": format_time(p.fork_ns) if p.fork_ns is not None else None,
        "comm": p.comm, "uid": p.uid, "target": p.target,
        **context_of(p),
        "execs": [{"time": format_time(e["time_ns"]), "time_ns": e["time_ns"], "filename": e["filename"],
                   "argv": e["argv"], **e["context"]} for e in p.execs],
        "failed_execs": [{"time": format_time(f["time_ns"]), "time_ns": f["time_ns"],
                          "filename": f["filename"], "argv": f["argv"], "errno": f["errno"],
                          "errno_name": errno_module.errorcode.get(abs(f["errno"] or 0)), **f["context"]}
                         for f in p.failed],
        "exit": None if p.exit is None else {
            "time": format_time(p.exit["time_ns"]), "time_ns": p.exit["time_ns"],
            "exit_code": p.exit["exit_code"], "signal": p.exit["signal"],
            "core_dumped": p.exit["core_dumped"], "duration_ns": p.exit["duration_ns"]},
        "seen_at_start": p.seen is not None,
        "children": [_node_json(k) for k in p.children],
    }


def render_json(tree: Tree, stream) -> None:
    t = tree.target
    doc = {"target": {"pid": t.pid, "boot_id": t.boot_id, "start_ns": t.start_ns},
           "incarnations": tree.incarnations, "complete_ancestry": tree.complete_ancestry,
           "truncated": tree.truncated, "processes": tree.nodes, "tree": _node_json(tree.root)}
    stream.write(json.dumps(doc, ensure_ascii=False) + "\n")


