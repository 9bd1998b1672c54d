"""capture/cgroups: a record's cgroup id -> its v2 path, systemd unit and container id.

The hierarchy tests make real directories under <v2 root>/test.slice (unique names),
move real child processes into them through cgroup.procs and read the ids back as the
kernel gives them: st_ino, readdir's d_ino, the kernfs file handle, /proc/PID/cgroup and,
in the kernel test, the BPF program's own cgroup_id. Every directory made is removed at
the end, its processes first moved back to the root cgroup.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import time
import uuid

import pytest

from auditd_lite import rows
from auditd_lite.capture import cgroups
from auditd_lite.capture.cgroups import GONE, NO_CGROUP2, REMOVED, RESOLVED, UNKNOWN, Mount
from conftest import InProcess

MOUNT = cgroups.cgroup2_mount()
hierarchy = pytest.mark.skipif(os.geteuid() != 0 or MOUNT is None,
                               reason="needs root and a cgroup v2 hierarchy")

HEX = "0123456789abcdef" * 4   # 64 hex digits
HEX2 = "fedcba9876543210" * 4


def kernfs_handle(path: str) -> tuple[int, int]:
    """(handle type, u64) of name_to_handle_at on a cgroup directory: the kernfs id."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(8 + 128)
    struct.pack_into("I", buf, 0, 128)
    mount_id = ctypes.c_int()
    assert libc.name_to_handle_at(-100, os.fsencode(path), buf, ctypes.byref(mount_id), 0) == 0, \
        os.strerror(ctypes.get_errno())
    size, kind = struct.unpack_from("Ii", buf, 0)
    assert size == 8
    return kind, struct.unpack_from("<Q", buf, 8)[0]


class Cgroups:
    """Directories made under <v2 root>/test.slice and the children moved into them."""

    def __init__(self):
        self.root = MOUNT.path
        self.slice = os.path.join(self.root, "test.slice")
        self.made: list[str] = []
        self.children: list[subprocess.Popen] = []
        self._made_slice = False

    def make(self, name: str | None = None, parent: str | None = None) -> str:
        """A new directory (default x<uuid>.scope) under test.slice (or parent); its path."""
        if not os.path.isdir(self.slice):
            try:
                os.mkdir(self.slice)
                self._made_slice = True
            except FileExistsError:
                pass
        path = os.path.join(parent or self.slice, name or f"x{uuid.uuid4().hex}.scope")
        os.mkdir(path)
        self.made.append(path)
        return path

    def rel(self, path: str) -> str:
        return path[len(self.root.rstrip("/")):]

    def child_in(self, path: str, argv=("sleep", "60")) -> subprocess.Popen:
        """A real child process moved into the cgroup at path."""
        p = subprocess.Popen(list(argv))
        self.children.append(p)
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        return p

    def remove(self, path: str) -> None:
        """Its processes back to the root cgroup, then rmdir."""
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = f.read().split()
        except FileNotFoundError:
            return
        for pid in pids:
            try:
                with open(os.path.join(self.root, "cgroup.procs"), "w") as f:
                    f.write(pid)
            except OSError:
                pass   # exited meanwhile
        for _ in range(50):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:   # EBUSY for a moment after the last task left
                time.sleep(0.02)
        os.rmdir(path)

    def cleanup(self) -> None:
        for p in self.children:
            if p.poll() is None:
                p.kill()
            p.wait()
        for path in sorted(self.made, key=lambda p: -p.count("/")):
            self.remove(path)
        if self._made_slice:
            try:
                os.rmdir(self.slice)
            except OSError:
                pass   # another test's cgroups still in it


@pytest.fixture
def cg():
    made = Cgroups()
    try:
        yield made
    finally:
        made.cleanup()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- the mount --------------------------------------------------------------------------

def write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_mount_found_on_pure_hybrid_and_v1_only_hosts(tmp_path):
    """mountinfo of a pure v2 host (Debian 12's default) gives /sys/fs/cgroup; of a hybrid
    host /sys/fs/cgroup/unified; of a v1-only host none; a mount of a subtree (a container's
    view) ranks after the hierarchy's root; an octal-escaped mount point is unescaped; with
    no mountinfo, /proc/mounts is read."""
    pure = write(tmp_path, "pure", "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n")
    hybrid = write(tmp_path, "hybrid", (
        "31 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "32 31 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
        "33 31 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "34 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"))
    v1 = write(tmp_path, "v1", "34 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    sub = write(tmp_path, "sub", (
        "50 24 0:30 /system.slice/docker-x.scope /mnt/c rw - cgroup2 cgroup2 rw\n"
        "51 24 0:30 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"))
    mounts = write(tmp_path, "mounts", "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n")
    assert cgroups.cgroup2_mount(pure) == Mount("/sys/fs/cgroup", "/")
    assert cgroups.cgroup2_mount(hybrid) == Mount("/sys/fs/cgroup/unified", "/")
    assert cgroups.cgroup2_mount(v1, mounts=str(tmp_path / "none")) is None
    assert cgroups.cgroup2_mounts(sub) == [Mount("/mnt/my cgroups", "/"), Mount("/mnt/c", "/system.slice/docker-x.scope")]
    assert cgroups.cgroup2_mount(str(tmp_path / "none"), mounts) == Mount("/sys/fs/cgroup/unified", "/")


def test_this_hosts_mount_is_the_one_proc_mounts_names():
    """On this machine the mount found is the cgroup2 line of /proc/mounts (here the hybrid
    /sys/fs/cgroup/unified), and its top directory is the root cgroup: id 1."""
    with open("/proc/mounts") as f:
        v2 = [line.split()[1] for line in f if line.split()[2] == "cgroup2"]
    if not v2:
        assert MOUNT is None
        assert cgroups.Resolver().resolve(1) == cgroups.Resolution(NO_CGROUP2)
        return
    assert MOUNT.path in v2
    assert os.stat(MOUNT.path).st_ino == 1
    assert os.path.isfile(os.path.join(MOUNT.path, "cgroup.procs"))


# ---- the id is the inode ------------------------------------------------------------------

@hierarchy
def test_cgroup_id_is_the_directory_inode(cg):
    """A hand-made cgroup's kernfs id (name_to_handle_at: type FILEID_KERNFS, 8 bytes) equals
    its directory's st_ino and readdir's d_ino; made again at the same path it gets a new id,
    and 30 make/remove rounds never give an id twice (ids are not reused in a boot)."""
    path = cg.make()
    ino = os.stat(path).st_ino
    assert kernfs_handle(path) == (cgroups.FILEID_KERNFS, ino)
    assert [e.inode() for e in os.scandir(cg.slice) if e.path == path] == [ino]
    seen = {ino}
    for _ in range(30):
        cg.remove(path)
        os.mkdir(path)
        seen.add(os.stat(path).st_ino)
    assert len(seen) == 31


@pytest.mark.kernel
@hierarchy
def test_bpf_cgroup_id_is_the_inode_and_resolves(cg, marker):
    """The BPF program's cgroup_id (bpf_get_current_cgroup_id) for an exec inside a hand-made
    test.slice/x<uuid>.scope (a shell writes its pid to cgroup.procs, then execs a marker) is
    that directory's st_ino, and the resolver maps it to the path and unit; the shell's own
    exec, before the move, carries the id of this test's cgroup directory."""
    from auditd_lite.capture import loader  # noqa: PLC0415 - only the kernel tests load

    path = cg.make()
    ino = os.stat(path).st_ino
    here, _ = cgroups.read_proc_cgroup(os.getpid())
    here_ino = os.stat(MOUNT.path.rstrip("/") + (here if here != "/" else "")).st_ino
    with InProcess(loader.ProgramSettings(buffer_kb=256), poll_ms=20) as loaded:
        p = subprocess.Popen(["/bin/sh", "-c", f'echo $$ > "{path}/cgroup.procs"; exec "{marker}"'])
        assert p.wait() == 0
    assert loaded.lost == 0
    cgroup_id = rows.ROW_FIELDS.index("cgroup_id")
    execs = {r[rows.F_FILENAME]: r[cgroup_id] for r in loaded.decoded()
             if r[rows.F_EVENT] == "exec" and r[2] == p.pid}
    assert execs == {"/bin/sh": here_ino, str(marker): ino}
    got = cgroups.Resolver().resolve(execs[str(marker)])
    assert (got.status, got.path, got.unit) == (RESOLVED, cg.rel(path), os.path.basename(path))


# ---- a real process in a hand-made cgroup ---------------------------------------------------

@hierarchy
@pytest.mark.parametrize("how", ["handle", "walk", "pid"])
def test_process_in_hand_made_scope_resolves_to_path_and_unit(cg, how):
    """A sleep moved into test.slice/x<uuid>.scope: /proc/PID/cgroup names that path, its id
    (the directory's st_ino) resolves to it with unit x<uuid>.scope and slice test.slice, by
    each way of looking: open_by_handle_at, a walk, or the pid hint alone (handles off, the
    walk just done before the cgroup existed). A pid in another cgroup is no hint: unknown."""
    clock = Clock()
    r = cgroups.Resolver(use_handles=(how == "handle"), clock=clock, walk_interval_ms=100)
    if how == "handle" and not r.uses_handles:
        pytest.skip("open_by_handle_at not permitted here")
    if how == "pid":
        r.walk()
    path = cg.make()
    child = cg.child_in(path)
    rel = cg.rel(path)
    assert cgroups.read_proc_cgroup(child.pid) == (rel, False)
    ino = os.stat(path).st_ino
    if how == "pid":
        assert r.resolve(ino, pid=os.getpid()) == cgroups.Resolution(UNKNOWN)
        got = r.resolve(ino, pid=child.pid)
    else:
        clock.now += 1
        got = r.resolve(ino)
    assert r.counts[how if how != "walk" else "walks"] >= 1
    assert got.status == RESOLVED
    assert (got.path, got.unit, got.cgroup.slice, got.container_id) == \
        (rel, os.path.basename(path), "test.slice", None)
    assert r.resolve(ino) == got and r.counts["hits"] == 1


@hierarchy
def test_seen_at_start_rows_from_proc_pid_cgroup(cg):
    """from_proc, for the rows of processes running at start: a child in a hand-made scope
    gives its directory's inode as cgroup id and the path and unit, and the resolver then
    answers that id from its cache; a child that exited (a zombie) after its cgroup was
    removed reads ' (deleted)': removed, the path it had, no id; a pid that is gone: gone."""
    path = cg.make()
    child = cg.child_in(path)
    r = cgroups.Resolver(use_handles=False, walk_interval_ms=1e9)
    r.walk()
    cgroup_id, got = cgroups.from_proc(child.pid, r)
    assert cgroup_id == os.stat(path).st_ino
    assert (got.status, got.path, got.unit) == (RESOLVED, cg.rel(path), os.path.basename(path))
    assert r.resolve(cgroup_id) == got and r.counts["walks"] == 1

    gone = cg.make()
    z = cg.child_in(gone)
    assert cgroups.read_proc_cgroup(z.pid) == (cg.rel(gone), False)
    os.kill(z.pid, 9)   # not reaped: a zombie
    deadline = time.monotonic() + 10
    while open(f"/proc/{z.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cg.remove(gone)
    assert cgroups.from_proc(z.pid, r) == (None, cgroups.Resolution(REMOVED, cgroups.parse_path(cg.rel(gone))))
    z.wait()
    assert cgroups.from_proc(z.pid, r) == (None, cgroups.Resolution(GONE))


@hierarchy
def test_container_style_names_yield_the_container_id(cg):
    """Real directories named as the runtimes name them, with a real process moved into the
    Docker one: docker-<64hex>.scope, cri-containerd-, crio-, libpod-, machine-<name>.scope
    (a systemd-escaped dash) and the cgroupfs driver's docker/<64hex> each resolve, by their
    id, to the container id and runtime; libpod-conmon- (podman's monitor) names none."""
    expect = {
        f"docker-{HEX}.scope": ("docker", HEX),
        f"cri-containerd-{HEX}.scope": ("containerd", HEX),
        f"crio-{HEX}.scope": ("cri-o", HEX),
        f"libpod-{HEX}.scope": ("podman", HEX),
        "machine-deb\\x2dtest.scope": ("machine", "deb-test"),
        f"libpod-conmon-{HEX}.scope": (None, None),
    }
    r = cgroups.Resolver()
    ids = {name: os.stat(cg.make(name)).st_ino for name in expect}
    child = cg.child_in(os.path.join(cg.slice, f"docker-{HEX}.scope"))
    assert cgroups.read_proc_cgroup(child.pid) == (f"/test.slice/docker-{HEX}.scope", False)
    for name, (runtime, cid) in expect.items():
        got = r.resolve(ids[name], pid=child.pid)
        assert got.status == RESOLVED, name
        assert (got.cgroup.runtime, got.container_id, got.unit) == (runtime, cid, name)
    docker = cg.make("docker")
    inner = cg.make(HEX2, parent=docker)
    got = cgroups.Resolver(use_handles=False).resolve(os.stat(inner).st_ino)
    assert (got.path, got.cgroup.runtime, got.container_id) == (f"/test.slice/docker/{HEX2}", "docker", HEX2)


# ---- staleness --------------------------------------------------------------------------

@hierarchy
@pytest.mark.parametrize("handles", [True, False])
def test_cgroup_removed_before_it_was_resolved_is_gone(cg, handles):
    """A cgroup removed before anything resolved it: its id is gone (no path, no guess), by
    open_by_handle_at's ESTALE or by a fresh walk, and stays so without another walk; a new
    directory at the same path has another id and does not answer for the old one."""
    r = cgroups.Resolver(use_handles=handles, clock=Clock())
    if handles and not r.uses_handles:
        pytest.skip("open_by_handle_at not permitted here")
    path = cg.make()
    old = os.stat(path).st_ino
    cg.remove(path)
    os.mkdir(path)
    new = os.stat(path).st_ino
    assert new != old
    assert r.resolve(old) == cgroups.Resolution(GONE)
    walks = r.counts["walks"]
    assert r.resolve(old) == cgroups.Resolution(GONE) and r.counts["walks"] == walks
    assert r.resolve(new).path == cg.rel(path)


@hierarchy
def test_cgroup_removed_after_it_was_resolved_keeps_its_path_as_removed(cg):
    """A cgroup resolved, then removed: the next walk marks its id removed, with the path it
    had (the answer for records made while it existed; its id is never reused), never
    resolved again; a new cgroup made at the same path is another id, resolved."""
    clock = Clock()
    r = cgroups.Resolver(use_handles=False, clock=clock, walk_interval_ms=100)
    path = cg.make()
    old = os.stat(path).st_ino
    assert r.resolve(old).status == RESOLVED
    cg.remove(path)
    os.mkdir(path)
    new = os.stat(path).st_ino
    clock.now += 1
    got_new = r.resolve(new)
    assert (got_new.status, got_new.path) == (RESOLVED, cg.rel(path))
    got_old = r.resolve(old)
    assert (got_old.status, got_old.path) == (REMOVED, cg.rel(path))
    r.walk()
    assert r.resolve(old).status == REMOVED and r.resolve(new).status == RESOLVED


@hierarchy
def test_walks_are_rate_limited_under_a_storm_of_new_cgroups(cg):
    """Handles off: 100 cgroups made after the last walk, and 5,000 look-ups of their ids and
    of unknown ids within one interval cost no walk (unknown, not gone: they may exist);
    once the interval passes, one walk resolves all 100."""
    clock = Clock()
    r = cgroups.Resolver(use_handles=False, clock=clock, walk_interval_ms=200)
    r.walk()
    made = [os.stat(cg.make(f"s{i}.scope")).st_ino for i in range(100)]
    for i in range(5000):
        assert r.resolve(made[i % 100] if i % 2 else 2**62 + i).status == UNKNOWN
        clock.now += 0.00001
    assert r.counts["walks"] == 1
    clock.now += 0.2
    assert all(r.resolve(i).status == RESOLVED for i in made)
    assert r.counts["walks"] == 2


@hierarchy
def test_cache_is_bounded(cg):
    """max_entries 20 with 60 cgroups: the cache never holds more than 20, evictions are
    counted, and an evicted id is found again by a later walk (resolved, not gone, though
    that walk evicts most of what it sees)."""
    clock = Clock()
    r = cgroups.Resolver(use_handles=False, clock=clock, walk_interval_ms=100, max_entries=20)
    made = [os.stat(cg.make(f"b{i}.scope")).st_ino for i in range(60)]
    assert r.walk() >= 61
    assert len(r._cache) == 20 and r.counts["evicted"] > 0
    clock.now += 1
    for i in made[:5]:
        clock.now += 1
        assert r.resolve(i).status == RESOLVED
    assert r.counts["walks"] <= 6 and len(r._cache) == 20


def test_no_cgroup2_hierarchy():
    """Without a v2 mount nothing resolves: no_cgroup2, no path, no walk."""
    r = cgroups.Resolver(None)
    assert r.resolve(1) == cgroups.Resolution(NO_CGROUP2) and r.walk() == 0


# ---- parsing --------------------------------------------------------------------------

UID = "2c1e3a4b-5d6f-4a7b-8c9d-0e1f2a3b4c5d"
U_ = UID.replace("-", "_")
KP = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice"
# path -> (unit, slice, user_unit, runtime, container id, pod uid)
PATHS = {
    "/": (None, None, None, None, None, None),
    "/init.scope": ("init.scope", None, None, None, None, None),
    "/system.slice/ssh.service": ("ssh.service", "system.slice", None, None, None, None),
    "/system.slice/system-getty.slice/getty@tty1.service":
        ("getty@tty1.service", "system-getty.slice", None, None, None, None),
    "/system.slice/_cpu.service": ("cpu.service", "system.slice", None, None, None, None),
    "/user.slice/user-1000.slice/session-3.scope": ("session-3.scope", "user-1000.slice", None, None, None, None),
    "/user.slice/user-1000.slice/user@1000.service/init.scope":
        ("user@1000.service", "user-1000.slice", "init.scope", None, None, None),
    "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1a2b.scope":
        ("user@1000.service", "user-1000.slice", "vte-spawn-1a2b.scope", None, None, None),
    "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope":
        ("user@1000.service", "user-1000.slice", "foo.scope", None, None, None),
    f"/system.slice/docker-{HEX}.scope": (f"docker-{HEX}.scope", "system.slice", None, "docker", HEX, None),
    f"/docker/{HEX}": (None, None, None, "docker", HEX, None),
    f"/system.slice/docker-{HEX}.scope/docker/{HEX2}":
        (f"docker-{HEX}.scope", "system.slice", None, "docker", HEX2, None),
    f"{KP}/cri-containerd-{HEX}.scope":
        (f"cri-containerd-{HEX}.scope", f"kubepods-burstable-pod{U_}.slice", None, "containerd", HEX, UID),
    f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{HEX}.scope":
        (f"cri-containerd-{HEX}.scope", f"kubepods-pod{U_}.slice", None, "containerd", HEX, UID),
    f"{KP}/docker-{HEX}.scope": (f"docker-{HEX}.scope", f"kubepods-burstable-pod{U_}.slice", None, "docker", HEX, UID),
    f"{KP}/crio-{HEX}.scope": (f"crio-{HEX}.scope", f"kubepods-burstable-pod{U_}.slice", None, "cri-o", HEX, UID),
    f"{KP}/crio-conmon-{HEX}.scope":
        (f"crio-conmon-{HEX}.scope", f"kubepods-burstable-pod{U_}.slice", None, None, None, UID),
    f"/kubepods/besteffort/pod{UID}/{HEX}": (None, None, None, "cri", HEX, UID),
    f"/kubepods/pod{UID}/{HEX}": (None, None, None, "cri", HEX, UID),
    f"/machine.slice/libpod-{HEX}.scope": (f"libpod-{HEX}.scope", "machine.slice", None, "podman", HEX, None),
    f"/machine.slice/libpod-{HEX}.scope/container": (f"libpod-{HEX}.scope", "machine.slice", None, "podman", HEX, None),
    f"/machine.slice/libpod-conmon-{HEX}.scope": (f"libpod-conmon-{HEX}.scope", "machine.slice", None, None, None, None),
    f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{HEX}.scope":
        ("user@1000.service", "user-1000.slice", f"libpod-{HEX}.scope", "podman", HEX, None),
    f"/libpod_parent/libpod-{HEX}": (None, None, None, "podman", HEX, None),
    "/machine.slice/machine-debian\\x2dtest.scope/payload/system.slice/ssh.service":
        ("machine-debian\\x2dtest.scope", "machine.slice", None, "machine", "debian-test", None),
    "/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator":
        ("machine-qemu\\x2d1\\x2dvm1.scope", "machine.slice", None, "machine", "qemu-1-vm1", None),
    "/lxc.payload.web1/system.slice/ssh.service": (None, None, None, "lxc", "web1", None),
    "/lxc/web1": (None, None, None, "lxc", "web1", None),
    "/lxc.monitor.web1": (None, None, None, None, None, None),
    f"/system.slice/docker-{HEX.upper()}.scope": (f"docker-{HEX.upper()}.scope", "system.slice", None, None, None, None),
    f"/system.slice/docker-{HEX[:63]}.scope": (f"docker-{HEX[:63]}.scope", "system.slice", None, None, None, None),
    f"/system.slice/containerd.service/{HEX}": ("containerd.service", "system.slice", None, None, None, None),
    "/process_api/d611924de7fc0a5daaa3e6f3db34779d": (None, None, None, None, None, None),
}


@pytest.mark.parametrize("path", PATHS)
def test_parse_real_world_paths(path):
    """Real-world cgroup paths (systemd services, sessions, user managers, Docker with either
    driver and nested, containerd/CRI and CRI-O under kubepods with either driver, Podman
    rootful, rootless and cgroupfs, systemd-nspawn and libvirt machines, LXC, and near misses)
    give the unit systemd would name, the slice, the user unit, the runtime, the container id
    and the pod uid; a near miss gives no container."""
    c = cgroups.parse_path(path)
    assert (c.unit, c.slice, c.user_unit, c.runtime, c.container_id, c.pod_uid) == PATHS[path]
    assert c.path == path


def test_nested_containers_are_all_listed():
    """Docker in Docker: the container id is the innermost; containers lists both, outer first."""
    c = cgroups.parse_path(f"/system.slice/docker-{HEX}.scope/docker/{HEX2}")
    assert c.containers == (("docker", HEX), ("docker", HEX2))


@pytest.mark.parametrize("content, expected", [
    ("9:name=systemd:/\n4:memory:/process_api/x\n1:cpu:/\n0::/\n", ("/", False)),
    ("0::/system.slice/ssh.service\n", ("/system.slice/ssh.service", False)),
    (b"0::/user.slice/user-1000.slice/session-3.scope\n", ("/user.slice/user-1000.slice/session-3.scope", False)),
    ("0::/test.slice/x.scope (deleted)\n", ("/test.slice/x.scope", True)),
    ("0::/a dir/with spaces.scope\n", ("/a dir/with spaces.scope", False)),
    ("12:pids:/\n11:memory:/docker/x\n1:name=systemd:/docker/x\n", None),
    ("", None),
])
def test_proc_pid_cgroup_lines(content, expected):
    """/proc/PID/cgroup: the v2 line (0::) of a hybrid, a pure v2 and a bytes file, a
    ' (deleted)' mark, spaces kept; a v1-only file and an empty one give None."""
    assert cgroups.proc_cgroup_path(content) == expected


@hierarchy
def test_without_cap_dac_read_search_the_walk_answers(cg, tmp_path):
    """The shipped unit has no CAP_DAC_READ_SEARCH, which open_by_handle_at needs: in a
    process without it (capsh --drop) the first miss turns handles off and a walk resolves
    the hand-made cgroup all the same."""
    import shutil  # noqa: PLC0415
    import sys  # noqa: PLC0415

    if not shutil.which("capsh"):
        pytest.skip("capsh (libcap2-bin) not installed")
    path = cg.make()
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "from auditd_lite.capture import cgroups\n"
        "r = cgroups.Resolver()\n"
        "before = r.uses_handles\n"
        "got = r.resolve(os.stat(sys.argv[1]).st_ino)\n"
        "print(before, r.uses_handles, got.status, got.path, r.counts['walks'])\n")
    out = subprocess.run(["capsh", "--drop=cap_dac_read_search", "--", "-c",
                          f'exec "{sys.executable}" "{probe}" "{path}"'],
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", RESOLVED, cg.rel(path), "1"]
