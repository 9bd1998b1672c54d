"""What user space adds to a decoded exec: the executable's SHA-256 and what its cgroup id
names (issue #13; the columns are rows.SYSTEM_FIELDS, in this order, after the working
directory the decoder gives).

    sha256, hash_status   capture/exehash.py; an exec only (a failed exec ran no image:
                          both NULL)
    cgroup, cgroup_status capture/cgroups.py; exec and exec_failed (their record carries
                          the id; an exit's does not: all NULL)
    unit, container_id    what the cgroup path names (cgroups.parse_path)

The writer calls ``begin`` as soon as a hand-over is decoded: the cgroup is resolved then
(cached, usually a dict hit) and the exec rows are submitted to the hash worker while their
processes most likely still live (/proc/PID/exe is then exact). ``finish``, when the batch is
written, waits for the answers up to a deadline counted from the first ``begin`` of the batch;
what is not in by then is ``late``, never waited for longer. The writer never blocks on a
file: a full worker answers ``busy``.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import structlog

from .. import hostinfo
from ..rows import (CONTEXT_AT, F_CGROUP_ID, F_COMM, F_CWD, F_CWD_STATUS, F_EVENT, F_FILENAME, F_PID,
                    F_START, F_TIME)
from . import cgroups, exehash
from .records import fs_text

log = structlog.get_logger("auditd_lite.context")

# an exit's SYSTEM_FIELDS, and a failed exec's hash part
NO_CONTEXT = (None,) * 6
_NO_HASH = (None, None)
# how long a batch waits past its first hand-over for hashes still being computed: a 256 MiB
# file in the page cache hashes in about 0.3 s here
WAIT_S = 1.0


def stored_cgroup(res: cgroups.Resolution) -> tuple:
    """(cgroup, cgroup_status, unit, container_id) of a resolution as a record stores them: a
    cgroup's name is any bytes (a user with a delegated subtree names their own), written as
    the records write text."""
    return fs_text(res.path), res.status, fs_text(res.unit), fs_text(res.container_id)


def host_root() -> str:
    """Where the daemon finds the files the paths of records name. Under the unit's sandbox
    (PrivateTmp, ProtectHome: a mount namespace of its own) its / is not the host's: then
    /proc/1/root, the root of init's namespace, which the processes it records usually share.
    Where that is not readable (a PID 1 we may not ptrace) or not different, our own /."""
    ours, init = hostinfo.mount_ns(), hostinfo.mount_ns(1)
    if ours is None or init is None or ours == init:
        return "/"
    if not os.access("/proc/1/root/", os.R_OK | os.X_OK):
        log.warning("host_root_unreadable", using="/",
                    why="the daemon has a mount namespace of its own and cannot read /proc/1/root: "
                        "paths under its sandbox (PrivateTmp, ProtectHome) hash as unreadable or gone")
        return "/"
    return "/proc/1/root"


def _log_hash(key: tuple) -> None:
    dev, ino, size, _, _ = key
    log.debug("executable_hashed", dev=dev, ino=ino, size=size)


class Pending(NamedTuple):
    rows: list[tuple]
    cgroup: list[tuple | None]      # per row: (cgroup, cgroup_status, unit, container_id)
    hashed: list[int]               # indexes of the rows submitted for hashing
    ticket: exehash.Ticket
    known: dict                     # index -> exehash.Result answered at once (the cache)


class PendingSeeds(NamedTuple):
    processes: list[dict]
    images: list[dict]              # those with an executable to hash
    ticket: exehash.Ticket
    deadline: float


# a process seen at start is alive: its /proc/PID/exe is there to hash, so it may take longer
SEED_WAIT_S = 30.0


class Context:
    """The writer's: one resolver and one hash worker for the run."""

    def __init__(self, resolver: cgroups.Resolver, worker: exehash.HashWorker, wait_s: float = WAIT_S):
        self.resolver = resolver
        self.worker = worker
        self.wait_s = wait_s

    @classmethod
    def for_run(cls, hash_enabled: bool = True, hash_limit: int = exehash.DEFAULT_LIMIT) -> "Context":
        hasher = exehash.Hasher(limit=hash_limit, enabled=hash_enabled, root=host_root(),
                                on_hash=_log_hash)
        return cls(cgroups.Resolver(), exehash.HashWorker(hasher).start())

    def close(self) -> None:
        self.worker.close(timeout=5)
        self.resolver.close()
        h = self.worker.hasher
        log.info("context_stopped", hashes=h.hashes, hash_cache_hits=h.hits, hash_busy=self.worker.busy,
                 hash_errors=self.worker.errors, cgroup=dict(self.resolver.counts))

    def cgroup_of(self, cgroup_id: int | None, pid: int | None = None) -> tuple:
        res = self.resolver.resolve(cgroup_id, pid) if cgroup_id is not None else \
            cgroups.Resolution(cgroups.UNKNOWN)
        return stored_cgroup(res)

    def begin(self, rows: list[tuple], identities: list | None = None) -> Pending:
        """``identities``: (index, identity) of the rows whose record named the executed file
        (records.Decoder.decode_all): a cached hash of that file is the answer at once, with no
        system call and no hand-over to the worker; the others are submitted with it."""
        cgs: list[tuple | None] = []
        requests, hashed = [], []
        cache: dict[int, tuple] = {}
        named = dict(identities) if identities else {}
        known: dict[int, exehash.Result] = {}
        cached = self.worker.hasher.cached
        for i, r in enumerate(rows):
            event = r[F_EVENT]
            if event == "exit":
                cgs.append(None)
                continue
            cid = r[F_CGROUP_ID]
            cg = cache.get(cid)
            if cg is None:
                cg = cache[cid] = self.cgroup_of(cid, r[F_PID])
            cgs.append(cg)
            if event == "exec":
                inode = named.get(i)
                if inode is not None:
                    hit = cached(inode)
                    if hit is not None:
                        known[i] = hit
                        continue
                # the record's paths are the host's own only where its root and mount
                # namespace are: else no hashing by path (the file there may be another)
                own = r[F_CWD_STATUS] in ("ok", "deleted")
                requests.append(exehash.Request(r[F_PID], r[F_FILENAME] if own else None, r[F_TIME],
                                                r[F_START], r[F_COMM], r[F_CWD] if own else None, inode))
                hashed.append(i)
        return Pending(rows, cgs, hashed, self.worker.submit(requests), known)

    def finish(self, pending: list[Pending], started: float) -> list[tuple]:
        """The rows of ``pending`` in order, each with its context; waits for hashes until
        ``started`` (time.monotonic() of the batch's first begin) + wait_s at most."""
        out: list[tuple] = []
        deadline = started + self.wait_s
        at = CONTEXT_AT  # the context goes after the working directory, before rows.GATE_FIELDS
        for p in pending:
            answers = p.ticket.wait(max(0.0, deadline - time.monotonic())) if p.hashed else ()
            hashes = dict(zip(p.hashed, answers))
            hashes.update(p.known)
            for i, (r, cg) in enumerate(zip(p.rows, p.cgroup)):
                if cg is None:
                    out.append(r[:at] + NO_CONTEXT + r[at:])
                    continue
                h = hashes.get(i)
                out.append(r[:at] + ((h.sha256, h.status) if h is not None else _NO_HASH) + cg + r[at:])
        return out

    def begin_seeds(self, processes: list[dict]) -> PendingSeeds:
        """Processes seen at start (capture/seed.py): their cgroup from /proc/PID/cgroup now,
        their executables submitted for hashing like an exec's."""
        for p in processes:
            _, res = cgroups.from_proc(p["pid"], self.resolver)
            p.update(zip(("cgroup", "cgroup_status", "unit", "container_id"), stored_cgroup(res)))
        # a kernel thread has no executable (nor does a process gone since it was listed):
        # nothing to hash, as for a failed exec
        images = [p for p in processes if p["filename"] is not None]
        ticket = self.worker.submit([exehash.Request(p["pid"], p["filename"], None, p["start_ns"],
                                                     p["comm"]) for p in images])
        return PendingSeeds(processes, images, ticket, time.monotonic() + SEED_WAIT_S)

    def finish_seeds(self, pending: PendingSeeds) -> list[dict]:
        answers = pending.ticket.wait(max(0.0, pending.deadline - time.monotonic()))
        for p in pending.processes:
            p.update(sha256=None, hash_status=None)
        for p, h in zip(pending.images, answers):
            p.update(sha256=h.sha256, hash_status=h.status)
        return pending.processes
