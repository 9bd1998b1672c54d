"""SHA-256 of the executable an exec ran, computed in user space (issue #13).

What is hashed is the image the kernel ran: what ``/proc/PID/exe`` names,
so that an exec row and a ``seen at start`` row (which only has
``/proc/PID/exe``) mean the same thing. For a ``#!`` script that is the
interpreter; the script stays in ``filename`` and ``argv``.

Where the content comes from, best first:

1. ``/proc/PID/exe`` while the process lives: the very inode that was
   executed, even if its path has since been replaced or deleted. The pid is
   trusted only if the process is still the one of the record: same start
   time (``start_ns``) and same ``comm`` when the caller knows them, read
   after the exe is opened, through the same ``/proc/PID`` directory fd (which
   fails rather than follow a reused pid). A process that exec'd again under
   another name, or renamed itself, falls through to 2 (a re-exec under the
   same name before we look is not told apart: a limit of what /proc keeps).
2. The record's path (joined to ``cwd`` when relative), followed through
   ``#!`` lines as the kernel does (binfmt_misc handlers are not followed).
   A path may name another file than the one executed, so the status says
   ``by_path``. The file's ctime must not be later than the exec: a rename or
   a new file puts a new ctime on what the path names, and ctime cannot be set
   back short of setting the clock, while an old mtime can (``mv``, ``cp -p``).
   Renaming a parent directory swaps files without touching their ctime, and a
   process in a container named a path of its own mounts: that is why the
   status is ``by_path`` and not ``ok``. In the daemon's sandbox
   (PrivateTmp, ProtectHome) paths resolve under ``root``; "/proc/1/root"
   sees the host's mounts (absolute symlinks met on the way still resolve in
   the daemon's own root).

Where the record carries the kernel's word for the file it ran (its identity: device, inode,
size, mtime and ctime of ``bprm->file`` at ``sched_process_exec``, issue #21), that decides
instead: a cached hash of that identity is the answer, with no system call at all; else the
file found through 1. or 2. is hashed only if it has that identity (``inode``), and is
``changed`` if not (the path names another file now, or it was written since the exec):
``same_file`` says what is compared and why not the device and ctime.

Statuses (``STATUSES``); the hash is set only for ``inode``, ``ok`` and ``by_path``:

    inode       hashed from the very inode the kernel named at the exec (or its cached hash)
    ok          hashed from /proc/PID/exe (or its cached hash)
    by_path     hashed from the record's path; the process was gone (or
                /proc/PID/exe was not that exec's) when it was looked at
    changed     not hashed: the file's identity (dev, ino, size, mtime_ns,
                ctime_ns) differed between the fstat before and the fstat
                after reading it on one fd (where ctime alone moved, a rename
                over its path or an unlink, it is read again, up to
                METADATA_RETRIES times), or the bytes read were not
                st_size, or it was modified after the exec (mtime for
                /proc/PID/exe, whose links may change but whose content the
                kernel keeps from writers while it runs; ctime for a path)
    gone        neither /proc/PID/exe nor the path could be opened (deleted,
                or a relative path with no working directory)
    too_large   bigger than the limit; not read at all
    unreadable  permission denied, not a regular file, I/O error, empty #!
    busy        the worker's queue was full; not looked at
    late        the writer stopped waiting before the worker answered
    off         hashing is turned off (--no-hash)

There is no ``cached`` status: a status says what the hash is worth, and the
same binary run twice should not read differently because of the cache's
state. The cache's work is counted instead (``Hasher.hashes``, ``.hits``).

The cache is keyed by (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns).
Timestamps come from a coarse clock (one tick, up to 10 ms), so a write in
the same tick as the stat we keyed on changes nothing we can see (kernels
with multigrain timestamps, 6.13 on, close this for the filesystems that use
them). A file changed less than ``RACY_NS`` before its hash is therefore
hashed but not cached, as git treats a "racily clean" index entry.

Off the writer's hot path: ``HashWorker`` is one thread with a bounded
queue. The intended use in the daemon:

- The writer, right after it decodes a hand-over, submits its exec rows in
  one call (``ticket = worker.submit([Request(pid, filename, time_ns,
  start_ns, comm, cwd), ...])``): one lock and one wake-up per hand-over, not
  per row, and early, since a process still alive is hashed exactly.
- When it flushes a batch it takes each ticket's answers with
  ``ticket.wait(timeout)``, the timeout running to the batch's first
  submission plus a bound (say 1 s: a 256 MiB file in the page cache
  hashes in about 0.3 s here). Most answers are ready long before: the batch
  itself waits up to its batch_ms, and a cached binary costs a few stats
  (5 us of CPU for a process gone, 12 us for one alive). What is not ready is
  ``late``; the worker still finishes it, so the next exec of that file is
  a cache hit.
- A full queue answers ``busy`` at once: the writer never blocks on hashing.
- ``seen at start`` rows call ``Hasher.lookup`` directly (or submit too).

One thread is enough: hashlib and os.preadv release the GIL, so a large
file does not hold up the writer, and a second thread would only race the
first to hash the same new binary twice.
"""

from __future__ import annotations

import collections
import hashlib
import os
import stat
import threading
import time
from typing import Callable, NamedTuple, Sequence

from .. import hostinfo
from .records import text

DEFAULT_LIMIT = 256 * 1024 * 1024
DEFAULT_CACHE_SIZE = 4096
CHUNK = 1 << 20
# twice the longest clock tick (HZ=100): a file changed longer ago than this has a ctime a later
# write would move
RACY_NS = 20_000_000
MAX_INTERPRETERS = 4  # the kernel's own limit on nested #! (BINPRM_MAX_RECURSION)
# reads again when only the ctime moved during a read: a rename or unlink is one, a loop of
# chmods must not hold the worker
METADATA_RETRIES = 2

STATUSES = ("inode", "ok", "by_path", "changed", "gone", "too_large", "unreadable", "busy", "late", "off")

_SIZE, _MTIME, _CTIME = 2, 3, 4  # in an identity tuple


class Result(NamedTuple):
    sha256: str | None
    status: str


OFF = Result(None, "off")
BUSY = Result(None, "busy")
LATE = Result(None, "late")
GONE = Result(None, "gone")
UNREADABLE = Result(None, "unreadable")
CHANGED = Result(None, "changed")
TOO_LARGE = Result(None, "too_large")


class Request(NamedTuple):
    """What an exec record knows. ``time_ns``: the exec's UTC time (file times are UTC);
    ``start_ns``: task->start_time (CLOCK_MONOTONIC); ``comm`` as records decode it."""

    pid: int
    filename: str | None
    time_ns: int | None = None
    start_ns: int | None = None
    comm: str | None = None
    cwd: str | None = None
    # the kernel's identity of the file the exec ran (identity()'s shape), or None
    inode: tuple | None = None


def identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def same_file(seen: tuple, named: tuple) -> bool:
    """Whether the file is the one the kernel named, unmodified: the same inode, size and mtime.
    Not the device, which btrfs subvolumes and overlayfs report otherwise in stat than in their
    superblock; not ctime, which a rename over the file's path and its deletion move (its link
    count changes), where the hash of what ran must still be given. A write moves mtime; setting
    it back (utime) is the one change this does not see."""
    return seen[1:4] == named[1:4]


class Hasher:
    """Looks up and hashes executables; thread-safe, one cache.

    ``on_hash`` is called with the file's identity after each file actually read and hashed
    (the daemon logs it at debug level: what the cache did not spare).
    ``during_read`` is a test hook, called once with the fd after the first chunk is read (so a
    test can change the file mid-hash deterministically); None in the daemon.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, cache_size: int = DEFAULT_CACHE_SIZE, *,
                 enabled: bool = True, root: str = "/", proc: str = "/proc",
                 during_read: Callable[[int], None] | None = None,
                 on_hash: Callable[[tuple], None] | None = None):
        self.limit = limit
        self.cache_size = cache_size
        self.enabled = enabled
        self.root = root.rstrip("/")
        self.proc = proc
        self.during_read = during_read
        self.on_hash = on_hash
        self.hashes = 0  # files actually read and hashed
        self.hits = 0
        self._cache: collections.OrderedDict[tuple, Result] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._tick = hostinfo.clock_tick_ns()

    def __len__(self) -> int:
        return len(self._cache)

    def lookup(self, pid: int, filename: str | None, time_ns: int | None = None, *,
               start_ns: int | None = None, comm: str | None = None,
               cwd: str | None = None) -> Result:
        if not self.enabled:
            return OFF
        fd = self._open_exe(pid, start_ns, comm)
        if fd is not None:
            try:
                return self._digest(fd, time_ns, _MTIME)
            finally:
                os.close(fd)
        if not filename:
            return GONE
        r = self._by_path(filename, time_ns, cwd, 0)
        return Result(r.sha256, "by_path") if r.status == "ok" else r

    def request(self, req: Request) -> Result:
        if req.inode is not None:
            return self.lookup_inode(req)
        return self.lookup(req.pid, req.filename, req.time_ns, start_ns=req.start_ns,
                           comm=req.comm, cwd=req.cwd)

    def cached(self, named: tuple) -> Result | None:
        """The hash of the file the kernel named, when it is cached: no system call (the
        writer asks this itself and submits only what it does not answer)."""
        if not self.enabled:
            return OFF
        hit = self._hit(named)
        return None if hit is None else Result(hit.sha256, "inode")

    def lookup_inode(self, req: Request) -> Result:
        """The hash of the very file the kernel named (req.inode): cached, or read from
        /proc/PID/exe while the process lives, else from the path, provided what is found there
        is that file; ``changed`` when it is not."""
        hit = self.cached(req.inode)
        if hit is not None:
            return hit
        fd = self._open_exe(req.pid, req.start_ns, req.comm)
        if fd is None:
            if not req.filename:
                return GONE
            fd = self._resolve(req.filename, req.cwd, 0)
            if isinstance(fd, Result):
                return fd
        try:
            return self._digest(fd, None, _MTIME, named=req.inode)
        finally:
            os.close(fd)

    def _open(self, filename: str) -> int | Result:
        """A read-only fd on what an absolute path names now, under the root; or why not."""
        try:
            # O_NONBLOCK: what the path names now may be a FIFO
            return os.open(self.root + filename, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return GONE
        except OSError:
            return UNREADABLE

    def _resolve(self, filename: str, cwd: str | None, depth: int) -> int | Result:
        """An fd on the file a path runs, its #! lines followed as the kernel does; or why not."""
        if not filename.startswith("/"):
            if not cwd:
                return GONE
            filename = os.path.join(cwd, filename)
        fd = self._open(filename)
        if isinstance(fd, Result):
            return fd
        if depth >= MAX_INTERPRETERS:
            return fd
        try:
            st = os.fstat(fd)
            head = os.pread(fd, 256, 0) if stat.S_ISREG(st.st_mode) else b""
        except OSError:
            os.close(fd)
            return UNREADABLE
        if not head.startswith(b"#!"):
            return fd
        os.close(fd)
        interp = _interpreter(head)
        return self._resolve(interp, cwd, depth + 1) if interp else UNREADABLE

    # /proc/PID/exe

    def _open_exe(self, pid: int, start_ns: int | None, comm: str | None) -> int | None:
        try:
            # signal 0 sends nothing; it is a tenth of a failed /proc lookup, the common case
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass  # EPERM: it exists
        try:
            dfd = os.open(f"{self.proc}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            try:
                # a zombie or kernel thread has no exe; EACCES without ptrace rights
                fd = os.open("exe", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                return None
            # checked after the open: a re-exec before it shows in comm, one after it does not
            # matter, the fd holds the earlier image
            if self._same_process(dfd, start_ns, comm):
                return fd
            os.close(fd)
            return None
        finally:
            os.close(dfd)

    def _same_process(self, dfd: int, start_ns: int | None, comm: str | None) -> bool:
        try:
            if comm is not None:
                if text(_read_at(dfd, "comm").rstrip(b"\n")) != comm:
                    return False
            if start_ns is not None:
                raw = _read_at(dfd, "stat")
                ticks = int(raw[raw.rindex(b")") + 2:].split()[19])
                # /proc counts boot time, the record monotonic time; a suspend since the process
                # started makes this fail, and the path is used instead
                seen = ticks * self._tick - hostinfo.boottime_minus_monotonic_ns()
                if abs(seen - start_ns) > self._tick:
                    return False
        except (OSError, ValueError, IndexError):
            return False
        return True

    # the path

    def _by_path(self, filename: str, time_ns: int | None, cwd: str | None, depth: int) -> Result:
        if not filename.startswith("/"):
            if not cwd:
                return GONE
            filename = os.path.join(cwd, filename)
        # a stat first: the usual answer is a cached binary, which needs no open and no read
        try:
            st = os.stat(self.root + filename)
        except (FileNotFoundError, NotADirectoryError):
            return GONE
        except OSError:
            return UNREADABLE
        key = identity(st)
        if time_ns is not None and key[_CTIME] > time_ns:
            return CHANGED
        hit = self._hit(key)  # a script's own identity is never cached, only what was hashed
        if hit is not None:
            return hit
        fd = self._open(filename)
        if isinstance(fd, Result):
            return fd
        try:
            if depth < MAX_INTERPRETERS:
                try:
                    st = os.fstat(fd)
                    head = os.pread(fd, 256, 0) if stat.S_ISREG(st.st_mode) else b""
                except OSError:
                    return UNREADABLE
                if head.startswith(b"#!"):
                    if time_ns is not None and st.st_ctime_ns > time_ns:
                        return CHANGED
                    interp = _interpreter(head)
                    if not interp:
                        return UNREADABLE
                    return self._by_path(interp, time_ns, cwd, depth + 1)
            return self._digest(fd, time_ns, _CTIME)
        finally:
            os.close(fd)

    # the content

    def _digest(self, fd: int, time_ns: int | None, stamp: int, named: tuple | None = None) -> Result:
        """The hash of what fd holds, ``ok``; with ``named`` (the kernel's identity of the file
        that ran), ``inode``, or ``changed`` when fd is another file or was modified since."""
        started = time.time_ns()
        try:
            st = os.fstat(fd)
        except OSError:
            return UNREADABLE
        if not stat.S_ISREG(st.st_mode):
            return UNREADABLE
        key = identity(st)
        if named is not None and not same_file(key, named):
            return CHANGED
        if time_ns is not None and key[stamp] > time_ns:
            return CHANGED
        if st.st_size > self.limit:
            return TOO_LARGE
        hit = self._hit(key)
        if hit is not None:
            if named is not None:
                self._remember(named, hit)
                return Result(hit.sha256, "inode")
            return hit
        for _ in range(METADATA_RETRIES + 1):
            try:
                digest, n = self._read(fd, key[_SIZE])
                after = identity(os.fstat(fd))
            except OSError:
                return UNREADABLE
            if n == key[_SIZE] and after == key:
                break
            # ctime alone moved while it was read (a rename over its path, an unlink, a chmod):
            # read again, as a look begun a moment later would, held to the same checks
            if n != key[_SIZE] or after[:_CTIME] != key[:_CTIME]:
                return CHANGED
            if time_ns is not None and after[stamp] > time_ns:
                return CHANGED
            key = after
        else:
            return CHANGED
        with self._lock:
            self.hashes += 1
        if self.on_hash is not None:
            self.on_hash(key)
        if key[_CTIME] < started - RACY_NS:
            self._remember(key, Result(digest, "ok"))
            if named is not None:
                self._remember(named, Result(digest, "ok"))
        return Result(digest, "ok" if named is None else "inode")

    def _remember(self, key: tuple, result: Result) -> None:
        with self._lock:
            self._cache[key] = result
            self._cache.move_to_end(key)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _hit(self, key: tuple) -> Result | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            self._cache.move_to_end(key)
            self.hits += 1
            return hit

    def _read(self, fd: int, size: int) -> tuple[str, int]:
        """(hex digest, bytes read), reading at most one byte more than ``size``: a file that
        grew is caught without reading all of it."""
        h = hashlib.sha256()
        buf = bytearray(min(CHUNK, size + 1))
        view, n = memoryview(buf), 0
        while n <= size:
            got = os.preadv(fd, [buf], n)
            if not got:
                break
            h.update(view[:got])
            n += got
            if self.during_read is not None and n == got:
                self.during_read(fd)
        return h.hexdigest(), n


def _read_at(dfd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _interpreter(head: bytes) -> str:
    """The interpreter of a #! line, parsed as fs/binfmt_script.c does (up to the first
    newline or the end of the buffer, blanks around, ends at a blank)."""
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    return os.fsdecode(line.split(None, 1)[0]) if line else ""


class Ticket:
    """The answers to one ``submit``, in its order."""

    __slots__ = ("_results", "_done")

    def __init__(self, n: int, fill: Result | None = None):
        self._results: list[Result | None] = [fill] * n
        self._done = threading.Event()
        if fill is not None or n == 0:
            self._done.set()

    def ready(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> list[Result]:
        """The answers, waiting up to ``timeout`` seconds; those not in by then are ``late``
        (a copy: the worker's later answers no longer change it)."""
        self._done.wait(timeout)
        return [r if r is not None else LATE for r in self._results]


class HashWorker:
    """One thread answering submitted requests with ``Hasher.request``."""

    def __init__(self, hasher: Hasher, max_pending: int = 10_000):
        self.hasher = hasher
        self.max_pending = max_pending
        self.busy = 0  # requests answered busy (a count for the run's log)
        self.errors = 0  # requests that raised (answered unreadable): a bug, not a file
        self._queue: collections.deque[tuple[Ticket, Sequence[Request], int]] = collections.deque()
        self._pending = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="exehash", daemon=True)

    def start(self) -> "HashWorker":
        self._thread.start()
        return self

    def submit(self, requests: Sequence[Request]) -> Ticket:
        """Never blocks: what does not fit in the queue is answered ``busy`` now."""
        if not self.hasher.enabled:
            return Ticket(len(requests), OFF)
        ticket = Ticket(len(requests))
        with self._cv:
            room = max(0, min(len(requests), self.max_pending - self._pending))
            if self._stopping:
                room = 0
            for i in range(room, len(requests)):
                ticket._results[i] = BUSY
            self.busy += len(requests) - room
            if room:
                self._queue.append((ticket, requests, room))
                self._pending += room
                self._cv.notify()
            else:
                ticket._done.set()
        return ticket

    def close(self, timeout: float | None = None) -> None:
        """Answer what is queued, then stop."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                ticket, requests, n = self._queue.popleft()
            results = ticket._results
            for i in range(n):
                try:
                    results[i] = self.hasher.request(requests[i])
                except Exception:  # noqa: BLE001 - one odd file must not stop the thread
                    self.errors += 1
                    results[i] = UNREADABLE
            with self._cv:
                self._pending -= n
            ticket._done.set()
