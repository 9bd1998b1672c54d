"""The Python mirror of ``bpf/auditd_lite.h`` and the decoder of raw records.

A decoded record is a tuple in ``ROW_FIELDS`` order, the order in which the
writer inserts it: tuples, not dicts, because this runs once per record on
the hot path. Flags are 0/1 ints, as SQLite gives them back, so the hash
chain sees the same values when it is recomputed from the database.
"""

from __future__ import annotations

import os
import struct

from ..memo import Memo
from ..rows import ABI_NAMES

EV_EXEC, EV_EXEC_FAILED, EV_EXIT = 1, 2, 3
EVENT_NAMES = {EV_EXEC: "exec", EV_EXEC_FAILED: "exec_failed", EV_EXIT: "exit"}

FLAG_ARGS_TRUNCATED = 1
FLAG_ARGC_TRUNCATED = 2
FLAG_FILENAME_TRUNCATED = 4
FLAG_ARGV_FROM_STASH = 8
FLAG_NO_STASH = 16
FLAG_NO_CWD = 32
FLAG_CWD_TRUNCATED = 64
FLAG_CWD_DELETED = 128
FLAG_CWD_CHROOT = 256
FLAG_EXE_ID = 512

CNT_LOST = 0
CNT_STASH_MISS = 1
CNT_MAX = 2

ABI_UNKNOWN, ABI_X64, ABI_IA32, ABI_X32 = 0, 1, 2, 3
# the abi column's words (rows.ABI_NAMES, which the read side filters by); unknown is NULL
ABI_WORDS = dict(zip((ABI_X64, ABI_IA32, ABI_X32), ABI_NAMES))

COMM_LEN = 16

# struct layouts, field by field as in the header (natural alignment, little endian)
EVENT_HDR = struct.Struct("<IIIIQQQII16s")
EXIT_EVENT = struct.Struct("<IIIIQQQII16sQII")
EXEC_EVENT = struct.Struct("<IIIIQQQII16sQIIIiiIIHHHHIIIQQQQ")

_unpack_exit = EXIT_EVENT.unpack_from
_unpack_exec = EXEC_EVENT.unpack_from
_EXEC_SIZE = EXEC_EVENT.size

# (struct name, [(field, offset, size)]) as the header declares them; checked
# against bpf/auditd_lite.h by tests/test_contract.py
LAYOUT = {
    "event_hdr": [
        ("type", 0, 4), ("pid", 4, 4), ("tid", 8, 4), ("ppid", 12, 4),
        ("ts_ns", 16, 8), ("start_ns", 24, 8), ("pstart_ns", 32, 8), ("uid", 40, 4),
        ("gid", 44, 4), ("comm", 48, 16),
    ],
    "exit_event": [("h", 0, 64), ("duration_ns", 64, 8), ("status", 72, 4), ("_pad", 76, 4)],
    "exec_event": [
        ("h", 0, 64), ("cgroup_id", 64, 8), ("euid", 72, 4), ("auid", 76, 4),
        ("sessionid", 80, 4), ("old_pid", 84, 4), ("err", 88, 4), ("argc", 92, 4),
        ("flags", 96, 4), ("filename_len", 100, 2), ("args_len", 102, 2),
        ("cwd_len", 104, 2), ("abi", 106, 2), ("mntns", 108, 4), ("exe_dev", 112, 4),
        ("_pad", 116, 4), ("exe_ino", 120, 8), ("exe_size", 128, 8), ("exe_mtime_ns", 136, 8),
        ("exe_ctime_ns", 144, 8),
    ],
}

# ABI_WORDS by the record's number (0, unknown, and any number past them: None)
_ABI_BY_NUMBER = tuple(ABI_WORDS.get(n) for n in range(max(ABI_WORDS) + 1))

try:  # auditd_lite/capture/_decode.c, built with the package where a compiler was (setup.py)
    from ._decode import EXEC_SIZE as _C_EXEC, EXIT_SIZE as _C_EXIT, decode_all as _compiled
    if (_C_EXEC, _C_EXIT) != (EXEC_EVENT.size, EXIT_EVENT.size):
        _compiled, DECODER = None, "python (the compiled decoder's layout is another)"
    else:
        DECODER = "compiled"
except ImportError as e:
    _compiled, DECODER = None, f"python ({e})"


def text(raw: bytes) -> str:
    """Kernel bytes as text up to the first NUL; bytes that are not UTF-8 escaped as \\xNN."""
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    return raw.decode("utf-8", "backslashreplace")


def fs_text(name: str | None) -> str | None:
    """A name the file system gave as str (os.fsdecode: bytes that are not UTF-8 as lone
    surrogates, which SQLite cannot store) as the records write text: as ``text`` writes the
    kernel's bytes."""
    if name is None or name.isascii():
        return name
    return text(os.fsencode(name))




_CWD_FLAGS = FLAG_NO_CWD | FLAG_CWD_TRUNCATED | FLAG_CWD_DELETED | FLAG_CWD_CHROOT
# cwd_status: the words that apply, in this order, or "ok"; "unknown" (and no cwd) when the
# program could not read it
_CWD_WORDS = ((FLAG_CWD_DELETED, "deleted"), (FLAG_CWD_TRUNCATED, "truncated"),
              (FLAG_CWD_CHROOT, "chroot"))


def user_dev(kdev: int) -> int:
    """The kernel's dev_t (major << 20 | minor, include/linux/kdev_t.h) as stat gives st_dev."""
    return os.makedev(kdev >> 20, kdev & 0xFFFFF)


def cwd_path(raw: bytes, flags: int) -> str:
    """The walk's names (leaf first, each NUL-terminated) as a path from the root; a path
    the walk could not finish starts with "..." where the names it left are."""
    names = [text(n) for n in raw.split(b"\0")[:-1]] if raw else []
    path = "/" + "/".join(reversed(names))
    return "..." + path if flags & FLAG_CWD_TRUNCATED else path


def cwd_status(flags: int, mntns: int, host_mntns: int | None) -> str:
    words = [w for bit, w in _CWD_WORDS if flags & bit]
    if host_mntns is not None and mntns and mntns != host_mntns:
        words.append("other_ns")  # the path is that namespace's, not the host's
    return ",".join(words) or "ok"


class Decoder:
    """Turns raw records into row tuples (rows.DECODED_FIELDS: the captured columns, the
    working directory, then rows.GATE_FIELDS).

    ``realtime_offset_ns`` converts the kernel's CLOCK_MONOTONIC timestamps to
    UTC; the writer refreshes it (BatchWriter) so a clock step is followed.
    ``host_mntns``: the host's mount namespace (hostinfo.host_mount_ns), against
    which a working directory is said to be in another one.
    """

    def __init__(self, max_args: int, realtime_offset_ns: int = 0, host_mntns: int | None = None):
        self.max_args = max_args
        self.realtime_offset_ns = realtime_offset_ns
        self.host_mntns = host_mntns
        self._texts = Memo(text)  # comm and filename
        self._cwds = Memo(self._make_cwd)

    def decode(self, raw: bytes) -> tuple:
        return self.decode_all((raw,))[0]

    def decode_all(self, raws, identities: list | None = None) -> list[tuple]:
        """Every record of a hand-over, in order: one call per hand-over rather than per record
        keeps the per-record work to the unpack and the tuple (the writer's hot path). The
        compiled decoder's (DECODER says which runs: docs/design.md, "The compiled hot path") or
        decode_all_python's: the same rows.

        ``identities``: where to append (index of the row, the executed file's identity as
        exehash.identity gives it) for each exec whose record carries the kernel's word for the
        file (FLAG_EXE_ID). It is no column: it says which file the hash must be of."""
        if _compiled is not None and self.max_args >= 1:
            return _compiled(raws, identities, self.max_args, self.realtime_offset_ns, self._texts,
                             self._cwds, _ABI_BY_NUMBER)
        return self.decode_all_python(raws, identities)

    def decode_all_python(self, raws, identities: list | None = None) -> list[tuple]:
        """decode_all in Python: the reference the compiled decoder is held to."""
        texts = self._texts
        abis = ABI_WORDS
        max_args, offset = self.max_args, self.realtime_offset_ns
        unpack_exit, unpack_exec, size = _unpack_exit, _unpack_exec, _EXEC_SIZE
        out = []
        append = out.append
        for raw in raws:
            kind = raw[0]
            if kind == EV_EXIT:
                (_, pid, tid, ppid, ts, start, pstart, uid, gid, comm, duration, status,
                 _) = unpack_exit(raw)
                append(("exit", ts + offset, pid, tid, ppid, uid, gid, texts[comm],
                        start, None, None, None, None, None, None, None, None, None, None,
                        status, (status >> 8) & 0xFF, status & 0x7F, (status >> 7) & 1, duration,
                        None, None, None, pstart))
                continue
            if kind == EV_EXEC:
                event = "exec"
            elif kind == EV_EXEC_FAILED:
                event = "exec_failed"
            else:
                raise ValueError(f"unknown record type {kind}")
            (_, pid, tid, ppid, ts, start, pstart, uid, gid, comm, cgroup, euid, auid, ses, old_pid,
             err, argc, flags, fl, al, cl, abi, mntns, dev, _, ino, exe_size, mtime, ctime) = unpack_exec(raw)
            if identities is not None and flags & FLAG_EXE_ID and kind == EV_EXEC:
                identities.append((len(out), (user_dev(dev), ino, exe_size, mtime, ctime)))
            end = size + fl
            filename = texts[raw[size:end]]
            cwd = self._cwd(raw[end + al:end + al + cl], flags, mntns)
            truncated = flags & (FLAG_ARGS_TRUNCATED | FLAG_ARGC_TRUNCATED)
            if al:
                args = raw[end:end + al]
                if args.endswith(b"\0"):
                    args = args[:-1]
                count = args.count(b"\0") + 1
                if not flags & (FLAG_ARGS_TRUNCATED | FLAG_ARGV_FROM_STASH):
                    argc = count  # the new image's whole argument area was read: exact
                elif count > argc:
                    argc = count
                if count > max_args:
                    args = b"\0".join(args.split(b"\0")[:max_args])
                    truncated = 1
            else:
                args = b""
            if flags & FLAG_NO_STASH and (kind == EV_EXEC_FAILED or not al):
                truncated = 1  # the kernel could not see the arguments at all
            append((event, ts + offset, pid, tid, ppid, uid, gid, texts[comm], start, old_pid,
                    euid, auid, ses, cgroup, filename, args, argc, 1 if truncated else 0,
                    err if kind == EV_EXEC_FAILED else None, None, None, None, None, None) + cwd
                   + (abis.get(abi), pstart))
        return out

    def _cwd(self, raw: bytes, flags: int, mntns: int) -> tuple:
        """(cwd, cwd_status); a storm's execs share a few directories: each made once."""
        return self._cwds[(raw, flags & _CWD_FLAGS, mntns)]

    def _make_cwd(self, key: tuple) -> tuple:
        raw, flags, mntns = key
        if flags & FLAG_NO_CWD:
            return None, "unknown"
        return cwd_path(raw, flags), cwd_status(flags, mntns, self.host_mntns)
