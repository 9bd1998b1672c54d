"""`auditd-lite verify --verify-key`: the seals of the daemon's files (auditd_lite/seal.py;
docs/sealing.md).

The unkeyed chain (chain.py) says the records are as the chain's hashes say; anyone who can
write the files can recompute those. A seal is an HMAC, with the key of its epoch, over the
last batch's id and hash when it was made: it vouches for that batch and, through the chain,
for every record before it. With a verification key (K0) every epoch's key of its chain is
computed and:

- every seal's MAC is checked: a seal forged or edited is found;
- the batch each seal names must be in the files with the hash it sealed: a sealed record,
  run row, seen process or retention record edited (the hashes after it recomputed), a sealed
  batch removed, a file replaced by a consistent forgery, are found, and named by the first
  epoch whose seal no longer holds, with what the batches since the seal before it hold;
- a key chain's epochs are numbered without a hole from its first seal in the files to its
  last: a seal removed is found (an attacker holding the current key can make no earlier
  epoch's seal);
- after the newest seal: if it is a stop seal, no batch may follow it; otherwise a daemon must
  still be writing (the directory's lock) and the seal be recent (seals are due every epoch):
  seals and batches cut off the end are found. What follows a recent seal is the open epoch,
  "not yet sealed".

`seal setup --force` begins a new key chain: each chain is checked with its own key, and seals
of a chain whose key was not given are named, not checked. A start seal after a seal that was
not a stop (the daemon died) is noted: the records written since the seal before were sealed
only at that start, not while the daemon was down.

Each file's line says up to when its records are sealed, and what is not yet sealed; a problem
the chain check found in a batch no seal covers yet says so. Standard library and cryptography.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import chain, seal
from ..dbfiles import has_table, open_ro
from ..timeparse import format_duration, format_time

# how late the daemon's seal may be besides one epoch before verify calls it missing: the
# writer seals between batches (at least every half second) and a loaded machine is slow
LATE_S = 10
_COLUMNS = seal.FIELDS + ("mac",)


@dataclass
class _File:
    name: str
    lo: int | None
    hi: int | None
    seals: list = field(default_factory=list)  # dicts of _COLUMNS, in the order written
    hashes: dict = field(default_factory=dict)  # batch id -> hash, for batches seals name
    # after the last batch a seal vouches for: batches, records, first id, first and last
    # written_ns; and the newest written_ns up to it
    after: tuple = (0, 0, None, None, None)
    sealed_to: int | None = None
    carries: dict = field(default_factory=dict)  # batch id -> what it holds besides records
    path: object = None


def read(conn, name: str) -> list[dict]:
    """The seals of one file (``name``), in the order written (verify reads them in the
    snapshot it checks the file's chain in); none in a file from before revision 0005."""
    if not has_table(conn, "seals"):
        return []
    return [dict(zip(_COLUMNS, row), file=name) for row in conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM seals ORDER BY id")]


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


class _Check:
    def __init__(self, report, several: bool, files: list | None = None):
        self.report = report
        self.several = several  # more than one key chain given: name the key with an epoch
        self.files = files or []

    def problem(self, name: str, reason: str, batch: int | None = None) -> None:
        self.report.problems.append(chain.Problem(name, batch, reason))

    def epoch(self, s: dict) -> str:
        return f"epoch {s['epoch']}" + (f" of key {s['key_id']}" if self.several else "")


def check(chain_files, keys: list[seal.VerifyKey], report, running: bool | None = None,
          now_ns: int | None = None) -> None:
    """Check the seals of ``chain_files`` (verify's, oldest first) with ``keys``; problems,
    notes and one line per file (``report.seal_lines``) go into ``report``. ``running``: whether
    a daemon holds the directory's lock (None: not known, for files given by name); ``now_ns``:
    the time the last seal's age is judged at (now)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    files = [_File(cf.name, cf.lo, cf.hi, list(cf.seals), carries=dict(cf.found.carries), path=cf.path)
             for cf in chain_files]
    by_id = {k.id: k for k in keys}
    c = _Check(report, len(by_id) > 1, files)
    found_before = list(report.problems)  # the chain's problems: those after the seals are open
    written = [s for f in files for s in f.seals]  # in the order the files hold them
    _look_up(chain_files, files, {s["batch_id"] for s in written}, None)
    valid = []
    for kid in sorted({s["key_id"] for s in written} - set(by_id)):
        n = sum(1 for s in written if s["key_id"] == kid)
        report.notes.append(f"{n} seal{'s' if n != 1 else ''} of key {kid}, which was not given, "
                            "not checked (another `seal setup`: give its key too)")
    for k in keys:
        valid += _check_chain(k, [s for s in written if s["key_id"] == k.id], files, c)
    valid.sort(key=lambda s: (s["sealed_ns"], s["batch_id"]))
    covered = max((s["batch_id"] for s in valid), default=0)
    _look_up(chain_files, files, set(), covered)
    still_open = _tail(files, written, valid, keys, running, now_ns, c)
    for p in found_before:
        if p.batch_id is not None and p.batch_id > covered:
            p.reason += "; NOT YET SEALED (after the last seal)"
    for f in files:
        line = _file_line(f, covered, valid, c)
        if still_open and f.after[0]:
            line += f": {still_open}"
        report.seal_lines.append(line)


def _check_chain(key: seal.VerifyKey, seals: list, files: list[_File], c: _Check) -> list:
    """One key chain's seals: each one's mac and batch, then their numbering; the seals that hold."""
    seen: dict[int, dict] = {}
    for s in seals:
        if s["epoch"] in seen:
            c.problem(s["file"], f"{c.epoch(s)} is sealed twice (also in {seen[s['epoch']]['file']}): "
                      "a seal copied in")
        seen.setdefault(s["epoch"], s)
    ordered = sorted(seen.values(), key=lambda s: s["epoch"])
    valid, broken = [], None  # broken: the first seal of a run whose batches are not as sealed,
    # with the batch the last seal that held had sealed
    keys, k, at = key.keys(), None, -1
    for s in ordered:
        while at < s["epoch"]:
            k, at = next(keys), at + 1
        if not seal.mac_matches(k, s):
            c.problem(s["file"], f"{c.epoch(s)}: its seal does not verify with this key: forged or edited")
            continue
        holder = _holder(files, s["batch_id"])
        if not _matches(holder, s):
            broken = broken or (s, holder, valid[-1]["batch_id"] if valid else 0)
            continue
        _say_broken(broken, c)
        broken = None
        valid.append(s)
    _say_broken(broken, c)
    _numbering(ordered, c)
    return valid


def _say_broken(broken, c: _Check) -> None:
    if broken is None:
        return
    s, holder, since = broken
    b = s["batch_id"]
    if holder is None or b not in holder.hashes:
        c.problem(s["file"], f"{c.epoch(s)} sealed batch {b}, which no file holds: sealed batches "
                  "were removed", b)
    else:
        c.problem(holder.name, f"batch {b} is not what {c.epoch(s)} sealed: something sealed in "
                  f"{c.epoch(s)} or before was changed, and the hashes after it recomputed; "
                  f"since the last seal that holds, batches {since + 1}..{b} hold "
                  f"{_held(c.files, since + 1, b)}", b)


def _held(files: list[_File], lo: int, hi: int) -> str:
    """What batches lo..hi hold: their records, and every other row their hashes cover."""
    records, other = 0, []
    for f in files:
        if f.lo is None or f.hi < lo or f.lo > hi:
            continue
        conn = open_ro(f.path)
        try:
            records += conn.execute("SELECT coalesce(sum(count), 0) FROM batches WHERE id BETWEEN ? AND ?",
                                    (lo, hi)).fetchone()[0]
        finally:
            conn.close()
        other += [w for b, said in sorted(f.carries.items()) if lo <= b <= hi for w in said]
    return ", ".join([f"{records} record{'s' if records != 1 else ''}"] + other)


def _numbering(seals: list, c: _Check) -> None:
    """One chain's seals by epoch: no hole, in time order, and the starts after a death noted."""
    if not seals:
        return
    notes = c.report.notes
    first = seals[0]
    if first["epoch"] > 0:
        notes.append(f"{first['file']}: the first seal here is {c.epoch(first)}: epochs before it "
                     "sealed files that are not here")
    elif first["batch_id"]:
        notes.append(f"{first['file']}: sealing began at {format_time(first['sealed_ns'])}: batches "
                     f"up to {first['batch_id']} were written before it, and sealed as found then")
    for a, b in zip(seals, seals[1:]):
        if b["epoch"] > a["epoch"] + 1:
            gap = (f"epoch {a['epoch'] + 1}" if b["epoch"] == a["epoch"] + 2
                   else f"epochs {a['epoch'] + 1}..{b['epoch'] - 1}")
            c.problem(b["file"], f"the seals of {gap} are missing (between {c.epoch(a)} in {a['file']} "
                      f"and {c.epoch(b)}): removed")
        if b["sealed_ns"] < a["sealed_ns"] or b["batch_id"] < a["batch_id"]:
            c.problem(b["file"], f"{c.epoch(b)} is sealed before {c.epoch(a)}, or over an earlier "
                      "batch: seals out of order")
        if b["reason"] == "start" and a["reason"] != "stop" and b["epoch"] == a["epoch"] + 1:
            notes.append(
                f"{b['file']}: {c.epoch(b)} began at a start ({format_time(b['sealed_ns'])}) after "
                f"{c.epoch(a)} ({format_time(a['sealed_ns'])}) ended without a stop seal: the daemon "
                "died; what it wrote between them was sealed only at the start, not while it was down")


def _tail(files, written, valid, keys, running, now_ns: int, c: _Check) -> str | None:
    """What comes after the newest seal: nothing after a stop seal; after another, the open
    epoch (returned: what to say of it), unless no daemon is running to close it or it is older
    than an epoch allows."""
    newest_file = next((f for f in reversed(files) if f.lo is not None), files[-1] if files else None)
    if newest_file is None:
        return None
    batches = sum(f.after[0] for f in files)
    records = sum(f.after[1] for f in files)
    first_tail = next((f for f in files if f.after[0]), None)
    if not written:
        made = max(k.created_s for k in keys)
        latest = max(f.after[4] or 0 for f in files)
        if batches and latest > (made + 2 * min(k.interval_s for k in keys) + LATE_S) * 10**9:
            c.problem(newest_file.name, f"no seal in any file, though sealing was set up at "
                      f"{format_time(made * 10**9)}: every seal was removed, or the daemon never "
                      "sealed (no sealing state)")
        return None
    last = max(written, key=lambda s: (s["sealed_ns"], s["batch_id"]))
    if not valid or last is not valid[-1]:
        if last["key_id"] not in {k.id for k in keys}:
            c.problem(last["file"], f"the newest seal is of key {last['key_id']}, which was not given: "
                      "what it seals was not checked (give its key too)")
        return None  # else a later seal does not hold: said above
    e = c.epoch(last)
    if last["reason"] == "stop":
        if batches:
            c.problem(first_tail.name, f"{records} records (batches {first_tail.after[2]} on) were "
                      f"written after the stop seal of {e} ({format_time(last['sealed_ns'])}) and no "
                      "seal covers them: the daemon ran without sealing, or they were put in afterwards")
        return None
    if running is False:
        c.problem(newest_file.name, f"no daemon is writing here, and the last seal, {e} "
                  f"({last['reason']}, {format_time(last['sealed_ns'])}), is not a stop seal: the daemon "
                  f"died (its next start seals what it left), or the seals after it (and what they "
                  f"sealed) were removed; {records} records after it are not sealed")
        return None
    due_ns = last["sealed_ns"] + last["interval_s"] * 10**9
    if now_ns > due_ns + (last["interval_s"] + LATE_S) * 10**9:
        c.problem(newest_file.name, f"the last seal, {e} ({last['reason']}, "
                  f"{format_time(last['sealed_ns'])}), is {format_duration(now_ns - last['sealed_ns'])} "
                  f"old and not a stop seal, while seals are due every "
                  f"{format_duration(last['interval_s'] * 10**9)}: newer seals (and what they sealed) "
                  f"were removed, or the daemon stopped sealing; {records} records after it are not sealed")
        return None
    return f"epoch {last['epoch'] + 1} is open, its seal due by {format_time(due_ns)}"


def _file_line(f: _File, covered: int, valid: list, c: _Check) -> str:
    here = [s for s in valid if s["file"] == f.name]
    epochs = ("" if not here else f"; seals of {c.epoch(here[0])}" if len(here) == 1
              else f"; seals of {c.epoch(here[0])} to {here[-1]['epoch']}")
    if f.lo is None:
        return f"{f.name}: no batches{epochs}"
    parts = []
    if f.lo <= covered:
        top = min(covered, f.hi)
        by = next(s for s in valid if s["batch_id"] >= top)
        which = f"batch {top}" if top == f.lo else f"batches {f.lo}..{top}"
        parts.append(f"sealed to {format_time(f.sealed_to)} ({which}, by {c.epoch(by)} at "
                     f"{format_time(by['sealed_ns'])}){epochs}")
    n_batches, n_records, first, since, _ = f.after
    if n_batches:
        which = f"batch {first}" if first == f.hi else f"batches {first}..{f.hi}"
        other = [w for b, said in sorted(f.carries.items()) if b >= first for w in said]
        parts.append(f"{n_records} records{''.join(', ' + w for w in other)} in {which} (since "
                     f"{format_time(since)}) NOT YET SEALED")
    return f"{f.name}: " + "; ".join(parts)
