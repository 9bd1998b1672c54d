"""`auditd-lite verify --verify-key`: the seals of the daemon's files (auditd_lite/seal.py;
docs/sealing.md).

The unkeyed chain (chain.py) says the records are as the chain's hashes say; anyone who can
write the files can recompute those. A seal is an HMAC, with the key of its epoch, over the
last batch's id and hash when it was made: it vouches for that batch and, through the chain,
for every record before it. With the verification key (K0) every epoch's key is computed and:

- every seal's MAC is checked, and its key id: a seal forged or edited is found;
- the batch each seal names must be in the files with the hash it sealed: a sealed record
  edited (the hashes after it recomputed), a sealed batch removed, a file replaced by a
  consistent forgery, are found, and named by the first epoch whose seal no longer holds;
- epochs are numbered without a hole from the first seal in the files to the last: a seal
  removed is found (an attacker holding the current key can make no earlier epoch's seal);
- after the last seal: if it is a stop seal, no batch may follow it; otherwise it must be
  recent (seals are due every epoch): seals and batches cut off the end are found, once an
  epoch has passed; what follows a recent seal is the open epoch, "not yet sealed".

A start seal after a seal that was not a stop (the daemon died) is noted: the records written
since the previous seal were sealed only at that start, not while the daemon was down.

Each file's line says up to when its records are sealed. Standard library and cryptography.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import chain, seal
from ..dbfiles import open_ro
from ..timeparse import format_duration, format_time

# how late the daemon's seal may be besides one epoch before verify calls it missing: the
# writer seals between batches (at least every half second) and a loaded machine is slow
LATE_S = 10
_SEAL_COLUMNS = ("id",) + tuple(f for f in seal.FIELDS if f != "epoch") + ("mac",)


@dataclass
class _File:
    name: str
    lo: int | None
    hi: int | None
    seals: list = field(default_factory=list)  # dicts with seal.FIELDS and mac
    hashes: dict = field(default_factory=dict)  # batch id -> hash, for batches seals name
    # after the last batch a seal vouches for: batches, records, first id, first and last
    # written_ns; and the newest written_ns up to it
    after: tuple = (0, 0, None, None, None)
    sealed_to: int | None = None


def _has_seals(conn) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seals'"
                             ).fetchone())


def count(paths) -> int:
    """The seals the files hold (for the note that they were not checked)."""
    n = 0
    for path in paths:
        conn = open_ro(path)
        try:
            if _has_seals(conn):
                n += conn.execute("SELECT count(*) FROM seals").fetchone()[0]
        finally:
            conn.close()
    return n


def _read(chain_files) -> list[_File]:
    files = []
    for cf in chain_files:
        f = _File(cf.name, cf.lo, cf.hi)
        conn = open_ro(cf.path)
        try:
            conn.isolation_level = None
            conn.execute("BEGIN")  # one snapshot of a live file for its seals and batches
            if _has_seals(conn):
                for row in conn.execute(f"SELECT {', '.join(_SEAL_COLUMNS)} FROM seals ORDER BY id"):
                    s = dict(zip(_SEAL_COLUMNS, row))
                    s["epoch"] = s.pop("id")
                    f.seals.append(s)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        files.append(f)
    return files


def _look_up(chain_files, files: list[_File], batch_ids: set[int], covered: int | None) -> None:
    """Each file's hashes of the batches seals name, and (unless None) what it holds up to and
    after batch ``covered``."""
    for cf, f in zip(chain_files, files):
        if f.lo is None:
            continue
        conn = open_ro(cf.path)
        try:
            ids = [b for b in batch_ids if f.lo <= b <= f.hi]
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                f.hashes.update(conn.execute(
                    f"SELECT id, hash FROM batches WHERE id IN ({', '.join('?' * len(part))})", part))
            if covered is not None:
                f.after = conn.execute(
                    "SELECT count(*), coalesce(sum(count), 0), min(id), min(written_ns), "
                    "max(written_ns) FROM batches WHERE id > ?", (covered,)).fetchone()
                f.sealed_to = conn.execute("SELECT max(written_ns) FROM batches WHERE id <= ?",
                                           (covered,)).fetchone()[0]
        finally:
            conn.close()


def _holder(files: list[_File], batch_id: int) -> _File | None:
    for f in files:
        if f.lo is not None and f.lo <= batch_id <= f.hi:
            return f
    return None


def _matches(f: _File | None, s: dict) -> bool:
    if s["batch_id"] == 0:
        return s["batch_hash"] == chain.GENESIS
    if f is None or s["batch_id"] not in f.hashes:
        return False
    stored = f.hashes[s["batch_id"]]
    # a batch from before the chain (no hash) is sealed as the chain stood then: at genesis
    return stored == s["batch_hash"] or (stored is None and s["batch_hash"] == chain.GENESIS)


def check(chain_files, key: seal.VerifyKey, report, running: bool | None = None,
          now_ns: int | None = None) -> None:
    """Check the seals of ``chain_files`` (verify's, oldest first) with ``key``; problems,
    notes and one line per file (``report.seal_lines``) go into ``report``. ``running``: whether
    a daemon holds the directory's lock (None: not known, for files given by name); ``now_ns``:
    the time the last seal's age is judged at (now)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    files = _read(chain_files)
    problem = lambda f, reason, batch=None: report.problems.append(chain.Problem(f, batch, reason))  # noqa: E731
    where = {}  # epoch -> the file holding its seal
    seals = []
    for f in files:
        for s in f.seals:
            if s["epoch"] in where:
                problem(f.name, f"epoch {s['epoch']} is sealed twice (also in {where[s['epoch']]}): "
                        "a seal copied in")
                continue
            where[s["epoch"]] = f.name
            seals.append(s)
    seals.sort(key=lambda s: s["epoch"])
    _look_up(chain_files, files, {s["batch_id"] for s in seals}, None)

    valid = []
    keys = key.keys()
    k, at = next(keys), 0
    broken = None  # the first epoch of a run of seals whose batches are not as sealed
    for s in seals:
        name, e = where[s["epoch"]], s["epoch"]
        while at < e:
            k, at = next(keys), at + 1
        if s["key_id"] != key.id:
            problem(name, f"epoch {e}: sealed with key id {s['key_id']}, not this key's {key.id}: "
                    "another setup, or a forgery")
            continue
        if not seal.mac_matches(k, s):
            problem(name, f"epoch {e}: its seal does not verify with this key: forged or edited")
            continue
        holder = _holder(files, s["batch_id"])
        if not _matches(holder, s):
            if broken is None:
                broken = (name, s, holder)
            continue
        _end_broken(broken, problem)
        broken = None
        valid.append(s)
    _end_broken(broken, problem)
    _continuity(seals, where, problem, report)

    # a seal that holds vouches for every batch up to the one it names
    last = valid[-1] if valid else None
    covered = max((s["batch_id"] for s in valid), default=0)
    _look_up(chain_files, files, set(), covered)
    still_open = _tail(files, seals, last, key, running, now_ns, problem)
    for f in files:
        line = _file_line(f, covered, where, valid)
        if still_open and f.after[0]:
            line += f": {still_open}"
        report.seal_lines.append(line)


def _end_broken(broken, problem) -> None:
    if broken is None:
        return
    name, s, holder = broken
    b = s["batch_id"]
    if holder is None or b not in holder.hashes:
        problem(name, f"epoch {s['epoch']} sealed batch {b}, which no file holds: sealed batches "
                "were removed", b)
    else:
        problem(holder.name, f"batch {b} is not what epoch {s['epoch']} sealed: a record sealed in "
                f"epoch {s['epoch']} or before was changed, and the hashes after it recomputed", b)


def _continuity(seals: list, where: dict, problem, report) -> None:
    if not seals:
        return
    if seals[0]["epoch"] > 0:
        report.notes.append(f"{where[seals[0]['epoch']]}: the first seal here is epoch "
                            f"{seals[0]['epoch']}: epochs before it sealed files that are not here")
    for a, b in zip(seals, seals[1:]):
        if b["epoch"] > a["epoch"] + 1:
            gap = (f"epoch {a['epoch'] + 1}" if b["epoch"] == a["epoch"] + 2
                   else f"epochs {a['epoch'] + 1}..{b['epoch'] - 1}")
            problem(where[b["epoch"]], f"the seals of {gap} are missing (between epoch {a['epoch']} "
                    f"in {where[a['epoch']]} and epoch {b['epoch']}): removed")
        if b["sealed_ns"] < a["sealed_ns"] or b["batch_id"] < a["batch_id"]:
            problem(where[b["epoch"]], f"epoch {b['epoch']} is sealed before epoch {a['epoch']}, or "
                    "over an earlier batch: seals out of order")
        if b["reason"] == "start" and a["reason"] != "stop" and b["epoch"] == a["epoch"] + 1:
            report.notes.append(
                f"{where[b['epoch']]}: epoch {b['epoch']} began at a start ({format_time(b['sealed_ns'])}) "
                f"after epoch {a['epoch']} ({format_time(a['sealed_ns'])}) ended without a stop seal: "
                "the daemon died; what it wrote between them was sealed only at the start, not "
                "while it was down")
    first = seals[0]
    if first["epoch"] == 0 and first["batch_id"]:
        report.notes.append(f"{where[0]}: sealing began at {format_time(first['sealed_ns'])}: batches "
                            f"up to {first['batch_id']} were written before it, and sealed as found then")


def _tail(files, seals, last, key, running, now_ns: int, problem) -> str | None:
    """What comes after the last seal that holds: nothing after a stop seal; after another, the
    open epoch (returned: what to say of it), unless no daemon is running to close it or it is
    older than an epoch allows."""
    newest = next((f for f in reversed(files) if f.lo is not None), files[-1] if files else None)
    if newest is None:
        return
    batches = sum(f.after[0] for f in files)
    records = sum(f.after[1] for f in files)
    first_tail = next((f for f in files if f.after[0]), None)
    if last is None:
        if seals:
            return  # none of them holds: said above
        if batches and max(f.after[4] or 0 for f in files) > (key.created_s + 2 * key.interval_s + LATE_S) * 10**9:
            problem(newest.name, f"no seal in any file, though sealing was set up at "
                    f"{format_time(key.created_s * 10**9)}: every seal was removed, or the daemon "
                    "never sealed (no sealing state)")
        return
    if seals[-1]["epoch"] != last["epoch"]:
        return  # a later seal does not hold: said above
    e = last["epoch"]
    if last["reason"] == "stop":
        if batches:
            problem(first_tail.name, f"{records} records (batches {first_tail.after[2]} on) were "
                    f"written after the stop seal of epoch {e} ({format_time(last['sealed_ns'])}) and "
                    "no seal covers them: the daemon ran without sealing, or they were put in afterwards")
        return
    if running is False:
        problem(newest.name, f"no daemon is writing here, and the last seal, epoch {e} "
                f"({last['reason']}, {format_time(last['sealed_ns'])}), is not a stop seal: the daemon "
                f"died (its next start seals what it left), or the seals after it (and what they "
                f"sealed) were removed; {records} records after it are not sealed")
        return
    due_ns = last["sealed_ns"] + last["interval_s"] * 10**9
    if now_ns > due_ns + (last["interval_s"] + LATE_S) * 10**9:
        problem(newest.name, f"the last seal, epoch {e} ({last['reason']}, "
                f"{format_time(last['sealed_ns'])}), is {format_duration(now_ns - last['sealed_ns'])} "
                f"old and not a stop seal, while seals are due every "
                f"{format_duration(last['interval_s'] * 10**9)}: newer seals (and what they sealed) "
                f"were removed, or the daemon stopped sealing; {records} records after it are not sealed")
        return
    return f"epoch {e + 1} is open, its seal due by {format_time(due_ns)}"


def _file_line(f: _File, covered: int, where: dict, valid: list) -> str:
    here = [s["epoch"] for s in valid if where[s["epoch"]] == f.name]
    epochs = ("" if not here else f"; seals of epoch {here[0]}" if len(here) == 1
              else f"; seals of epochs {here[0]}..{here[-1]}")
    if f.lo is None:
        return f"{f.name}: no batches{epochs}"
    parts = []
    if f.lo <= covered:
        top = min(covered, f.hi)
        by = next(s for s in valid if s["batch_id"] >= top)
        parts.append(f"sealed to {format_time(f.sealed_to)} (batches {f.lo}..{top}, by epoch "
                     f"{by['epoch']} at {format_time(by['sealed_ns'])}){epochs}")
    n_batches, n_records, first, since, _ = f.after
    if n_batches:
        parts.append(f"{n_records} records in batches {first}..{f.hi} (since "
                     f"{format_time(since)}) NOT YET SEALED")
    return f"{f.name}: " + "; ".join(parts)
