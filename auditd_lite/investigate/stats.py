"""`auditd-lite stats`: what is recorded, what was lost and when, which files, which runs.

Read-only, standard library only (the analysis side).
"""

from __future__ import annotations

from pathlib import Path

from ..dbfiles import (STREAM_COUNTERS, daemon_running, has_table, is_set_aside, merge_run, open_ro, revision_of,
                       run_rows, set_aside_files, set_aside_time_ns)
from ..timeparse import format_time
from . import evidence, seals as seal_rows
from .query import context_columns

EVENT_TYPES = ("exec", "exec_failed", "exit")
# the status of a row of a file that has the context columns but was written before it got
# them (upgraded in place): a writer since always sets both statuses of an exec
UNRECORDED = "unrecorded"
# the context that is a value, not a status: how many execs have one
_VALUES = ("sha256", "unit", "container_id")
_STATUSES = ("cwd_status", "hash_status", "cgroup_status")
_READS = frozenset(_STATUSES + _VALUES)


def _context_counts(conn, per_type: dict, into: dict) -> None:
    """Count the file's records per type into ``per_type`` and its execs' context into ``into``
    (exec_context), in one pass over the records."""
    statuses = ", ".join(_STATUSES)
    rows = conn.execute(
        f"SELECT event, {statuses}, count(*), "
        + ", ".join(f"count({c})" for c in _VALUES)
        + f" FROM events GROUP BY event, {statuses}")
    for event, *values in rows:
        got, (n, *have) = values[:len(_STATUSES)], values[len(_STATUSES):]
        per_type[event] = per_type.get(event, 0) + n
        if event != "exec":
            continue
        for key, value in zip(_STATUSES, got):
            name = value if value is not None else UNRECORDED
            into[key][name] = into[key].get(name, 0) + n
        for c, k in zip(_VALUES, have):
            into["with"][c] += k


def _sorted_counts(counts: dict) -> dict:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _run_summary(r: dict) -> dict:
    stopped = r.get("stopped_ns")
    return {"id": r["id"], "boot_id": r.get("boot_id"), "host": r.get("host"), "kernel": r.get("kernel"),
            "version": r.get("version"), "started": format_time(r["started_ns"]),
            "stopped": format_time(stopped) if stopped is not None else None,
            "events_written": r.get("events_written") or 0, "lost_kernel": r.get("lost_kernel") or 0,
            "lost_user": r.get("lost_user") or 0, "clean": stopped is not None, "running": False,
            # the live stream (revision 0004): None for a run without one
            **{c: r.get(c) for c in STREAM_COUNTERS}}


def collect(paths: list[Path], db_dir: Path | None = None) -> dict:
    events = dict.fromkeys(EVENT_TYPES, 0)
    files, runs, losses, sealed, removals = [], {}, [], [], []
    lost_kernel = lost_user = 0
    context = {**{s: {} for s in _STATUSES}, "with": dict.fromkeys(_VALUES, 0)}
    before = {"files": 0, "execs": 0}  # files from before revision 0003: context unknown
    for path in paths:
        conn = open_ro(path)
        try:
            if _READS <= context_columns(conn):
                per_type: dict = {}
                _context_counts(conn, per_type, context)
            else:
                per_type = dict(conn.execute("SELECT event, count(*) FROM events GROUP BY event"))
                before["files"] += 1
                before["execs"] += per_type.get("exec", 0)
            first, last = conn.execute("SELECT min(time_ns), max(time_ns) FROM events").fetchone()
            k, u = conn.execute("SELECT coalesce(sum(lost_kernel), 0), coalesce(sum(lost_user), 0) "
                                "FROM batches").fetchone()
            for written, bk, bu in conn.execute(
                    "SELECT written_ns, lost_kernel, lost_user FROM batches "
                    "WHERE lost_kernel > 0 OR lost_user > 0 ORDER BY written_ns"):
                losses.append({"time": format_time(written), "lost_kernel": bk, "lost_user": bu,
                               "file": path.name})
            for row in run_rows(conn):
                merge_run(runs, row)
            revision = revision_of(conn)
            file_seals = seal_rows.read(conn, path.name)
            if has_table(conn, "removed_files"):
                cur = conn.execute("SELECT * FROM removed_files")
                cols = [d[0] for d in cur.description]
                removals += [dict(zip(cols, r)) for r in cur]
        finally:
            conn.close()
        for name, n in per_type.items():
            events[name] = events.get(name, 0) + n
        lost_kernel += k
        lost_user += u
        files.append({
            "path": str(path), "size": path.stat().st_size, "events": sum(per_type.values()),
            "first": format_time(first) if first is not None else None,
            "last": format_time(last) if last is not None else None, "revision": revision,
            "seals": len(file_seals), "set_aside": is_set_aside(path),
        })
        sealed += file_seals
    running = daemon_running(db_dir)
    # live files the writer moved out of its way: read with the others (their records are in the
    # counts above) unless SQLite does not find them intact
    set_aside = []
    read = {f["path"] for f in files}
    for path in set_aside_files(db_dir) if db_dir is not None else []:
        at = set_aside_time_ns(path)
        set_aside.append({"path": str(path), "time": format_time(at) if at is not None else None,
                          "size": path.stat().st_size, "read": str(path) in read})
    ordered = [_run_summary(r) for r in sorted(runs.values(), key=lambda r: r["started_ns"])]
    if ordered and running and ordered[-1]["stopped"] is None:
        ordered[-1]["running"] = True
    unclean = [r for r in ordered if not r["clean"] and not r["running"]]
    return {
        "events": events, "lost_events": lost_kernel + lost_user,
        "lost_kernel": lost_kernel, "lost_user": lost_user, "losses": losses,
        "files": files, "runs": ordered, "unclean_runs": len(unclean),
        "daemon_running": running, "set_aside": set_aside, "sealing": _sealing(sealed),
        "retention": _retention(removals),
        "exec_context": {
            "execs": events.get("exec", 0), "before_context": before,
            **{key: _sorted_counts(context[key]) for key in _STATUSES}, "with": context["with"],
        },
    }


def _retention(found: list[dict]) -> dict:
    """What retention removed (its records in the files, docs/design.md "Retention")."""
    rows = evidence.Removed(found).rows
    last = max(rows, key=lambda r: r["removed_ns"], default=None)
    return {"removed_files": len(rows), "removed_records": sum(r.get("records") or 0 for r in rows),
            "first_record": min((format_time(r["first_ns"]) for r in rows if r.get("first_ns")), default=None),
            "last_record": max((format_time(r["last_ns"]) for r in rows if r.get("last_ns")), default=None),
            "last": None if last is None else {"file": last["name"], "reason": last["reason"],
                                               "detail": last.get("detail"),
                                               "time": format_time(last["removed_ns"])}}


def _sealing(found: list[dict]) -> dict:
    """The seals of the files (forward-secure sealing, docs/sealing.md): how many, of which key
    chains, and the newest; what they vouch for is verify --verify-key's to say."""
    newest = max(found, key=lambda x: x["sealed_ns"], default=None)
    return {"seals": len(found), "key_ids": sorted({x["key_id"] for x in found}),
            "last": None if newest is None else {
                "epoch": newest["epoch"], "reason": newest["reason"], "key_id": newest["key_id"],
                "time": format_time(newest["sealed_ns"]), "file": newest["file"]}}


def render_table(s: dict) -> str:
    lines = ["events:"]
    lines += [f"  {name:<12} {n}" for name, n in s["events"].items()]
    lines.append(f"lost events:   {s['lost_events']} (kernel {s['lost_kernel']}, user {s['lost_user']})")
    for loss in s["losses"][-20:]:
        lines.append(f"  {loss['time']}  kernel {loss['lost_kernel']}  user {loss['lost_user']}  "
                     f"({loss['file']})")
    lines.append(f"files: {len(s['files'])}")
    for f in s["files"]:
        lines.append(f"  {f['path']}  {f['size']} bytes  {f['events']} events  "
                     f"{f['first'] or '-'} .. {f['last'] or '-'}  rev {f['revision'] or '?'}"
                     + (f"  {f['seals']} seals" if f["seals"] else "")
                     + ("  (set aside)" if f["set_aside"] else ""))
    g = s["sealing"]
    if g["last"] is None:
        lines.append("seals: none (sealing is off, or was when these files were written)")
    else:
        last = g["last"]
        lines.append(f"seals: {g['seals']} (key {', '.join(g['key_ids'])}), the newest epoch "
                     f"{last['epoch']} ({last['reason']}) at {last['time']} in {last['file']}; "
                     "verify --verify-key checks them")
    if s["set_aside"]:
        lines.append(f"set aside: {len(s['set_aside'])}")
        for a in s["set_aside"]:
            lines.append(f"  {a['path']}  {a['time'] or '-'}  {a['size']} bytes  "
                         "(a live file the writer moved out of its way; "
                         + ("read with the others)" if a["read"] else "not intact: not read)"))
    r = s["retention"]
    if r["removed_files"]:
        last = r["last"]
        lines.append(f"removed by retention: {r['removed_files']} files, {r['removed_records']} records "
                     f"({r['first_record'] or '-'} .. {r['last_record'] or '-'}); the last, {last['file']}, "
                     f"at {last['time']}: {last['reason']}")
    c = s["exec_context"]
    lines.append(f"exec context: {c['execs']} execs")
    for key in _STATUSES:
        lines.append(f"  {key:<14} " + (", ".join(f"{name} {n}" for name, n in c[key].items()) or "-"))
    lines.append(f"  {'with':<14} " + ", ".join(f"{name} {n}" for name, n in c["with"].items()))
    b = c["before_context"]
    if b["files"]:
        lines.append(f"  {'unknown':<14} {b['execs']} (in {b['files']} file{'s' if b['files'] != 1 else ''} "
                     "from before schema revision 0003)")
    lines.append(f"runs: {len(s['runs'])}, unclean: {s['unclean_runs']}")
    for r in s["runs"]:
        state = "running" if r["running"] else "clean" if r["clean"] else "UNCLEAN STOP"
        lines.append(f"  run {r['id']}  {r['started']} .. {r['stopped'] or '-'}  {state}  "
                     f"{r['events_written']} written  lost {r['lost_kernel'] + r['lost_user']}  "
                     f"{r['host']} {r['kernel']} v{r['version']}"
                     + (f"  stream {r['stream_lines_written']} lines, {r['stream_lines_dropped']} dropped"
                        if r["stream_lines_written"] is not None else ""))
    return "\n".join(lines)
