"""A record's cgroup id turned into its cgroup path, systemd unit and container id.

The id: what the BPF program stores as `cgroup_id`, `bpf_get_current_cgroup_id()`,
the id of the task's cgroup v2 kernfs node. Since Linux 5.5 a kernfs id is
`(generation << 32) | cyclically allocated low bits`, and where `ino_t` is 64
bits (x86_64, the only architecture we run on) the directory's inode number
*is* that id. So the id equals `st_ino` of the cgroup's directory seen through
the v2 mount (the root cgroup is 1), and an id is never reused within a boot:
a removed cgroup's id never comes back for another one. (Before 5.5 the id
was `generation << 32 | ino` and st_ino only the low half: not supported.)

The hierarchy: the `cgroup2` mount in /proc/self/mountinfo (or /proc/mounts),
`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a hybrid one.

Resolving, cheapest first, never a guess:
  1. the cache, id -> entry, bounded (LRU);
  2. `open_by_handle_at` with the kernfs handle of the id (exact, O(1); needs
     CAP_DAC_READ_SEARCH: used where it works, else skipped for good);
  3. a pid the caller names: its /proc/PID/cgroup path, taken only if that
     directory's inode is the id (the process may have moved since);
  4. a walk of the whole hierarchy (os.scandir, d_ino), at most once per
     `walk_interval_ms`, so a storm of new cgroups costs a bounded number of walks
     (measured here: 2,000 cgroups take about 36 ms to walk; an open_by_handle_at
     look-up about 10 us). A walk of more cgroups than `max_entries` still answers
     the id it was made for; keep the bound above the host's cgroup count.

Statuses (`Resolution.status`):
  resolved    the id is this path (the directory was there when looked up; a
              removal since is noticed only by a later walk)
  removed     it was this path when seen, and a later look found it gone;
              the path is still the right answer for a record that carries the
              id, since ids are not reused (a stale entry can be out of date,
              never wrong)
  gone        not in the hierarchy at a look made after the question (a fresh
              walk or open_by_handle_at's ESTALE): it vanished before it was
              resolved. No path; cached, since the id cannot come back
  unknown     not found and not looked for now (walk rate-limited, no handles):
              may resolve on a later call. No path
  no_cgroup2  no cgroup v2 hierarchy is mounted. No path

Parsing a path (`parse_path`), systemd's and journald's rules (cg_path_get_unit,
_SYSTEMD_UNIT / _SYSTEMD_USER_UNIT / _SYSTEMD_SLICE):
  unit       the first component after the leading `.slice` ones, if it is a
             unit name (.service .scope .socket .mount .swap): the unit systemd
             itself names for the process (`systemctl status PID`), so
             `/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope`
             is unit `user@1000.service`; `/docker/<id>` has none
  user_unit  inside `user@UID.service`, the same rule again: `foo.scope` above
  slice      the last of the leading slices (`user-1000.slice`)
  container  the innermost component a runtime names (docker-in-docker: the
             inner one; `containers` lists all, outermost first):
               docker      docker-<64hex>.scope, docker/<64hex> (cgroupfs driver)
               containerd  cri-containerd-<64hex>.scope
               cri-o       crio-<64hex>.scope (not crio-conmon-)
               podman      libpod-<64hex>.scope, libpod_parent/libpod-<64hex>
                           (not libpod-conmon-)
               cri         kubepods/.../pod<uid>/<64hex> (cgroupfs: the runtime is
                           not in the path)
               machine     machine-<name>.scope: systemd-machined's machines,
                           systemd-nspawn (and libvirt); the id is the machine name
               lxc         lxc.payload.<name>, lxc/<name>
  pod_uid    kubepods-...-pod<uid>.slice or kubepods/.../pod<uid>

Paths are as /proc/PID/cgroup writes them: `/` is the root, components are
joined by `/`, names are str (non-UTF-8 bytes as surrogate escapes).
Standard library only; a Resolver may be shared between threads.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field

RESOLVED, REMOVED, GONE, UNKNOWN, NO_CGROUP2 = "resolved", "removed", "gone", "unknown", "no_cgroup2"
FOUND = (RESOLVED, REMOVED)

FILEID_KERNFS = 0xFE
_PREFERRED = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


# ---- the hierarchy -------------------------------------------------------------------

def _unoctal(s: str) -> str:
    """A /proc/mounts field with its octal escapes (\\040 for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


@dataclass(frozen=True)
class Mount:
    path: str    # where it is mounted, e.g. /sys/fs/cgroup/unified
    root: str    # which directory of the hierarchy is mounted there ("/" normally)


def cgroup2_mounts(mountinfo: str = "/proc/self/mountinfo", mounts: str = "/proc/mounts") -> list[Mount]:
    """Every cgroup2 mount, best first: those of the hierarchy's root, /sys/fs/cgroup, then
    /sys/fs/cgroup/unified, then the rest in mount order. [] when there is none."""
    found: list[Mount] = []
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                a, b = left.split(), right.split()
                if len(a) >= 5 and b and b[0] == "cgroup2":
                    found.append(Mount(_unoctal(a[4]), _unoctal(a[3])))
    except OSError:
        try:
            with open(mounts) as f:
                for line in f:
                    p = line.split()
                    if len(p) >= 3 and p[2] == "cgroup2":
                        found.append(Mount(_unoctal(p[1]), "/"))
        except OSError:
            return []

    def rank(m: Mount) -> tuple:
        return (m.root != "/", _PREFERRED.index(m.path) if m.path in _PREFERRED else len(_PREFERRED))
    return sorted(found, key=rank)


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo", mounts: str = "/proc/mounts") -> Mount | None:
    """The cgroup v2 mount to read, or None when there is no cgroup v2 hierarchy."""
    m = cgroup2_mounts(mountinfo, mounts)
    return m[0] if m else None


# ---- /proc/PID/cgroup ------------------------------------------------------------------

def proc_cgroup_path(content: str | bytes) -> tuple[str, bool] | None:
    """The v2 path in the text of a /proc/PID/cgroup file (its `0::/path` line) and whether
    the kernel marked it ` (deleted)`; None if there is no v2 line (a v1-only kernel)."""
    if isinstance(content, bytes):
        content = os.fsdecode(content)
    for line in content.split("\n"):
        if line.startswith("0::"):
            path = line[3:]
            deleted = path.endswith(" (deleted)")
            return (path[:-len(" (deleted)")] if deleted else path), deleted
    return None


def read_proc_cgroup(pid: int, proc: str = "/proc") -> tuple[str, bool] | None:
    """proc_cgroup_path of /proc/PID/cgroup; None if the process is gone or has no v2 line."""
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as f:
            return proc_cgroup_path(f.read())
    except OSError:
        return None


# ---- parsing a path --------------------------------------------------------------------

_UNIT_TYPES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_USER_MANAGER = re.compile(r"^user@\d+\.service$")
_H = "[0-9a-f]{64}"
_SCOPES = (
    (re.compile(rf"^docker-({_H})\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-({_H})\.scope$"), "containerd"),
    (re.compile(rf"^crio-({_H})\.scope$"), "cri-o"),
    (re.compile(rf"^libpod-({_H})(?:\.scope)?$"), "podman"),
)
_HEX64 = re.compile(rf"^{_H}$")
_MACHINE = re.compile(r"^machine-(.+)\.scope$")
_LXC = re.compile(r"^lxc\.payload\.(.+)$")
_POD_SLICE = re.compile(r"^kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$")
_POD_DIR = re.compile(r"^pod([0-9a-f-]{36})$")


@dataclass(frozen=True)
class Cgroup:
    path: str
    unit: str | None = None
    slice: str | None = None
    user_unit: str | None = None
    container_id: str | None = None
    runtime: str | None = None
    pod_uid: str | None = None
    containers: tuple[tuple[str, str], ...] = field(default=())   # (runtime, id), outermost first


def _is_unit(name: str) -> bool:
    return name.endswith(_UNIT_TYPES) and bool(_UNIT_NAME.match(name)) and not name.startswith(".")


def _unit_unescape(s: str) -> str:
    """systemd's unit-name escaping undone: \\x2d is '-' (a machine name's dash)."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def _unit_after_slices(parts: list[str], i: int) -> tuple[str | None, str | None, int]:
    """From parts[i]: (the last leading slice, the unit that follows them or None, its index)."""
    sl = None
    while i < len(parts) and parts[i].endswith(".slice") and _is_unit(parts[i]):
        sl = parts[i]
        i += 1
    if i < len(parts) and _is_unit(parts[i]) and not parts[i].endswith(".slice"):
        return sl, parts[i], i
    return sl, None, i


def parse_path(path: str) -> Cgroup:
    """What a cgroup v2 path tells: unit, slice, user unit, container (the rules above)."""
    # systemd prefixes a name that could clash with a kernel file with '_' (cg_escape)
    parts = [p[1:] if p.startswith("_") else p for p in path.split("/") if p]
    sl, unit, at = _unit_after_slices(parts, 0)
    user_unit = None
    if unit and _USER_MANAGER.match(unit):
        _, user_unit, _ = _unit_after_slices(parts, at + 1)
    containers: list[tuple[str, str]] = []
    pod = None
    kube = any(p.startswith("kubepods") for p in parts)
    for i, p in enumerate(parts):
        parent = parts[i - 1] if i else None
        m = _POD_SLICE.match(p)
        if m:
            pod = m.group(1).replace("_", "-")
            continue
        m = _POD_DIR.match(p)
        if m and kube:
            pod = m.group(1)
            continue
        for rx, runtime in _SCOPES:
            m = rx.match(p)
            if m:
                containers.append((runtime, m.group(1)))
                break
        else:
            if _HEX64.match(p) and parent == "docker":
                containers.append(("docker", p))
            elif _HEX64.match(p) and kube and parent and _POD_DIR.match(parent):
                containers.append(("cri", p))
            elif (m := _MACHINE.match(p)):
                containers.append(("machine", _unit_unescape(m.group(1))))
            elif (m := _LXC.match(p)):
                containers.append(("lxc", m.group(1)))
            elif parent == "lxc" and i == 1:
                containers.append(("lxc", p))
    runtime, cid = containers[-1] if containers else (None, None)
    norm = "/" + "/".join(p for p in path.split("/") if p)
    return Cgroup(norm, unit, sl, user_unit, cid, runtime, pod, tuple(containers))


# ---- resolving an id --------------------------------------------------------------------

@dataclass(frozen=True)
class Resolution:
    status: str
    cgroup: Cgroup | None = None

    @property
    def path(self) -> str | None:
        return self.cgroup.path if self.cgroup else None

    @property
    def unit(self) -> str | None:
        return self.cgroup.unit if self.cgroup else None

    @property
    def container_id(self) -> str | None:
        return self.cgroup.container_id if self.cgroup else None


class _Handles:
    """open_by_handle_at with kernfs handles: the directory of a cgroup id, exactly."""

    def __init__(self, mount_path: str):
        self.ok = False
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self._fn = self._libc.open_by_handle_at
            self._fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
            self._mount_fd = os.open(mount_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        self.ok = True

    def path_of(self, cgroup_id: int) -> str | None | bool:
        """The directory's absolute path; False if the id is not (or no longer) a cgroup;
        None if handles cannot be used here (and self.ok turns False)."""
        handle = struct.pack("<IiQ", 8, FILEID_KERNFS, cgroup_id)
        fd = self._fn(self._mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err in (errno.ESTALE, errno.ENOENT, errno.ENOTDIR):
                return False
            self.ok = False   # EPERM (no CAP_DAC_READ_SEARCH), EOPNOTSUPP, ...: walk instead
            return None
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        finally:
            os.close(fd)

    def close(self):
        fd, self._mount_fd = getattr(self, "_mount_fd", None), None
        if fd is not None:
            os.close(fd)
        self.ok = False


class Resolver:
    """cgroup id -> Resolution, cached (see the module's docstring for the rules).

    mount: the cgroup2 mount (default: cgroup2_mount()); max_entries bounds the cache;
    walk_interval_ms bounds how often a miss may walk the hierarchy; use_handles tries
    open_by_handle_at first; clock (seconds) is for tests."""

    def __init__(self, mount: Mount | None | str = "auto", *, max_entries: int = 32768,
                 walk_interval_ms: float = 500, use_handles: bool = True, clock=time.monotonic,
                 proc: str = "/proc"):
        self.mount = cgroup2_mount() if mount == "auto" else mount
        self.max_entries = max_entries
        self.walk_interval = walk_interval_ms / 1000
        self.clock = clock
        self.proc = proc
        self._cache: collections.OrderedDict[int, tuple[str, Cgroup | None, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0
        self._last_walk: float | None = None
        self.counts = collections.Counter()   # hits, handle, gone, pid, walks, walked_dirs, evicted, seeded
        self._handles = _Handles(self.mount.path) if (self.mount and use_handles) else None

    @property
    def uses_handles(self) -> bool:
        return bool(self._handles and self._handles.ok)

    def close(self):
        if self._handles:
            self._handles.close()

    # the path of a directory under the mount, as /proc/PID/cgroup writes it
    def _rel(self, absolute: str) -> str | None:
        base = self.mount.path.rstrip("/")
        if absolute != base and not absolute.startswith(base + "/"):
            return None
        rel = absolute[len(base):]
        root = self.mount.root.rstrip("/")
        return (root + rel) or "/"

    def _abs(self, path: str) -> str:
        root = self.mount.root.rstrip("/")
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root):]
        return self.mount.path.rstrip("/") + (path if path != "/" else "")

    def _put(self, cgroup_id: int, status: str, cg: Cgroup | None, gen: int | None = None):
        self._cache[cgroup_id] = (status, cg, self._generation if gen is None else gen)
        self._cache.move_to_end(cgroup_id)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
            self.counts["evicted"] += 1

    def resolve(self, cgroup_id: int, pid: int | None = None) -> Resolution:
        """The cgroup of a record's id; pid (the record's process) is a hint, used only if its
        current cgroup directory's inode is the id."""
        if self.mount is None:
            return Resolution(NO_CGROUP2)
        with self._lock:
            hit = self._cache.get(cgroup_id)
            if hit is not None:
                self._cache.move_to_end(cgroup_id)
                self.counts["hits"] += 1
                return Resolution(hit[0], hit[1])
            if self._handles and self._handles.ok:
                got = self._handles.path_of(cgroup_id)
                if got is False:
                    self.counts["gone"] += 1
                    self._put(cgroup_id, GONE, None)
                    return Resolution(GONE)
                if got:
                    deleted = got.endswith(" (deleted)")
                    rel = self._rel(got[:-len(" (deleted)")] if deleted else got)
                    if rel is not None:
                        self.counts["handle"] += 1
                        cg = parse_path(rel)
                        self._put(cgroup_id, REMOVED if deleted else RESOLVED, cg)
                        return Resolution(REMOVED if deleted else RESOLVED, cg)
            if pid is not None:
                got = read_proc_cgroup(pid, self.proc)
                if got and not got[1]:
                    try:
                        ino = os.stat(self._abs(got[0])).st_ino
                    except OSError:
                        ino = None
                    if ino == cgroup_id:
                        self.counts["pid"] += 1
                        cg = parse_path(got[0])
                        self._put(cgroup_id, RESOLVED, cg)
                        return Resolution(RESOLVED, cg)
            now = self.clock()
            if self._last_walk is not None and now - self._last_walk < self.walk_interval:
                return Resolution(UNKNOWN)
            seen = self._walk_locked(now)
            if cgroup_id in seen:   # not from the cache: the walk may have evicted it
                cg = seen[cgroup_id]
                self._put(cgroup_id, RESOLVED, cg)
                return Resolution(RESOLVED, cg)
            hit = self._cache.get(cgroup_id)
            if hit is not None:   # removed since an earlier walk saw it
                return Resolution(hit[0], hit[1])
            self._put(cgroup_id, GONE, None)
            return Resolution(GONE)

    def walk(self) -> int:
        """Walk the whole hierarchy now (whatever the interval); the number of cgroups seen."""
        if self.mount is None:
            return 0
        with self._lock:
            return len(self._walk_locked(self.clock()))

    def _walk_locked(self, now: float) -> dict[int, Cgroup]:
        """Walk, cache what was seen, mark what was not removed; the cgroups seen by id
        (all of them, even where they are more than the cache holds)."""
        self._last_walk = now
        self._generation += 1
        gen = self._generation
        self.counts["walks"] += 1
        base = self.mount.path
        seen: dict[int, str] = {}
        try:
            seen[os.stat(base).st_ino] = "/"
        except OSError:
            return {}
        stack = [(base, "")]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    for e in it:
                        # cgroups are the directories; d_ino from readdir is the kernfs id
                        if e.is_dir(follow_symlinks=False):
                            r = f"{rel}/{e.name}"
                            seen[e.inode()] = r
                            stack.append((e.path, r))
            except OSError:
                continue   # removed while walking
        self.counts["walked_dirs"] += len(seen)
        root = self.mount.root.rstrip("/")
        found: dict[int, Cgroup] = {}
        for ino, rel in seen.items():
            old = self._cache.get(ino)
            path = (root + rel) if rel != "/" else (root or "/")
            cg = old[1] if old and old[1] is not None and old[1].path == path else parse_path(path)
            found[ino] = cg
            self._put(ino, RESOLVED, cg, gen)
        # a cgroup seen before and absent now: removed (its id will never name another)
        for ino, (status, cg, g) in list(self._cache.items()):
            if status == RESOLVED and g != gen:
                self._cache[ino] = (REMOVED, cg, g)
        return found


def from_proc(pid: int, resolver: Resolver | None = None, proc: str = "/proc") -> tuple[int | None, Resolution]:
    """For a process seen at start: (its cgroup id as the BPF program would read it, or None,
    and its Resolution) from /proc/PID/cgroup. The id is the inode of the path's directory;
    with a resolver the answer is cached under it. A process that is gone: (None, gone);
    a kernel without cgroup v2: (None, no_cgroup2)."""
    got = read_proc_cgroup(pid, proc)
    if got is None:
        return None, Resolution(GONE if not os.path.exists(f"{proc}/{pid}") else NO_CGROUP2)
    path, deleted = got
    cg = parse_path(path)
    if deleted:
        return None, Resolution(REMOVED, cg)
    if resolver is None or resolver.mount is None:
        return None, Resolution(RESOLVED, cg)
    try:
        ino = os.stat(resolver._abs(path)).st_ino
    except OSError:
        return None, Resolution(RESOLVED, cg)   # the path /proc gave is still the answer
    with resolver._lock:
        resolver._put(ino, RESOLVED, cg)
        resolver.counts["seeded"] += 1
    return ino, Resolution(RESOLVED, cg)

