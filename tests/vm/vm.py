"""Boot Debian's own kernels under qemu with systemd as PID 1 and run a script.

The guest's root file system is this machine's, shared read-only over 9p
under a tmpfs overlay, so the guest has every package the host has and sees
the repository at the same absolute path; nothing is downloaded but the
kernel's own packages. See docs/vm.md.

    import kernels, vm      # tests/vm is on sys.path in its pytest tests
    res = vm.boot(kernels.by_name("6.1"), "uname -r > $VMTEST_RESULTS/uname", tmp_path, 300)
    assert res.ok, res.describe()

By hand: /usr/bin/python3 tests/vm/vm.py 6.1 'systemctl status' (see main()).

Standard library only: the host side runs under any python3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

try:
    from . import kernels as _kernels
except ImportError:  # imported as a top-level module (tests/vm on sys.path)
    import kernels as _kernels  # type: ignore[no-redef]

Kernel = _kernels.Kernel

REPO = Path(__file__).resolve().parents[2]
GUEST_RESULTS = "/run/vmtest/results"
GUEST_ENV = "/run/vmtest/env"
BUSYBOX = Path("/bin/busybox")

# Markers the guest prints on the console; the host timestamps them as they
# appear, so the timings are the host's wall clock, not the guest's.
MARK_FIRST = "Linux version"
MARK_INIT = "vmtest-init: start"
MARK_SWITCH = "vmtest-init: switch_root"
MARK_UNIT = "VMTEST-UNIT-START"
MARK_DONE = "VMTEST-DONE"

# Modules the initramfs needs, by module name; their dependencies come from
# modules.dep. A module built into a kernel is skipped for that kernel.
INITRAMFS_MODULES = ["virtio_pci", "virtio_rng", "9pnet_virtio", "9p", "overlay"]

# Units that cannot work in this guest or only slow its boot, masked in the
# overlay (never on the host). Reasons are in docs/vm.md.
MASKED_UNITS = [
    # no network device, no NTP server reachable
    "networking.service", "systemd-networkd.service", "systemd-networkd-wait-online.service",
    "systemd-timesyncd.service", "NetworkManager.service", "ifupdown-pre.service",
    # persistent timers fire at boot to catch up, and run apt/man-db/fstrim
    "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service",
    "man-db.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
    "dpkg-db-backup.timer", "logrotate.timer", "systemd-tmpfiles-clean.timer",
    # services this machine image has enabled that no guest test needs
    "postgresql.service", "cron.service", "ssh.service", "systemd-pstore.service",
    "unattended-upgrades.service", "packagekit.service",
    # installed here by `make bench` (its auditd configuration); would fail in a guest anyway
    "auditd.service",
    # a trixie root has it (its kernel image, which its kernel headers depend on, recommends
    # it): loading its profiles held the boot's critical chain 30 s under TCG; no profile
    # confines auditd-lite and no guest test touches AppArmor
    "apparmor.service",
    # the console is a log, nobody logs in
    "getty@.service", "serial-getty@.service", "getty.target",
    # the root is an overlay; there is no block device to check or remount
    "systemd-remount-fs.service", "systemd-fsck-root.service",
    # early-boot extras no guest test uses: each is a process (and a module
    # load) competing for the two emulated CPUs with the boot's critical chain
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount", "modprobe@drm.service", "modprobe@dm_mod.service",
    "modprobe@loop.service", "modprobe@fuse.service", "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount", "dev-hugepages.mount", "dev-mqueue.mount",
]


# Generators run at boot and at every daemon-reload (a package's postinst
# does one): 1-2 s each under TCG, and these find nothing to do in this
# guest (no crypttab, block devices, hibernation image, getty, rc.local or
# System V script without a unit, and postgresql is masked). Kept: fstab,
# and debug and run, which read systemd.mask=/systemd.run= from the command
# line (extra_cmdline) for debugging.
MASKED_GENERATORS = [
    "postgresql-generator", "systemd-cryptsetup-generator", "systemd-veritysetup-generator",
    "systemd-integritysetup-generator", "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator", "systemd-system-update-generator",
    "systemd-getty-generator", "systemd-rc-local-generator", "systemd-sysv-generator",
]

# Host files removed from the guest's view (whiteouts in the overlay).
HIDDEN = [
    # exits 101 ("Docker: never start services"): no postinst could start one
    "/usr/sbin/policy-rc.d",
    # makes systemd believe it runs in a Docker container: it then ignores
    # the kernel command line (graphical.target instead of multi-user)
    "/.dockerenv",
    # apt's packagekit hook calls PackageKit over D-Bus after each dpkg run;
    # with packagekit.service masked that prints a D-Bus error into every
    # install log, and unmasked it starts packagekitd for nothing
    "/usr/share/dbus-1/system-services/org.freedesktop.PackageKit.service",
]


class VMError(RuntimeError):
    """The VM tier cannot do what was asked (one sentence says why)."""


class KernelFetchError(VMError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("AUDITD_LITE_VM_CACHE", "/var/cache/auditd-lite-vm"))


def has_hw_virt() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M))


def accel() -> str:
    """kvm only where the CPU has vmx/svm: a /dev/kvm without them (a
    paravirtual KVM) hangs a stock kernel right after the boot loader."""
    forced = os.environ.get("AUDITD_LITE_VM_ACCEL", "")
    if forced:
        if forced not in ("kvm", "tcg"):
            raise VMError(f"AUDITD_LITE_VM_ACCEL must be kvm or tcg, not {forced!r}")
        return forced
    if has_hw_virt() and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm"
    return "tcg"


def _log(msg: str) -> None:
    print(f"vm: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- fetching


class _Apt:
    """A private apt state for one kernel: its own sources, lists, cache and
    an empty dpkg status, so the host's apt configuration is never touched
    and the candidate is the newest version in that kernel's suites alone."""

    def __init__(self, kernel: Kernel, root: Path):
        self.kernel = kernel
        self.root = root
        self.sources = root / "sources.list"
        for d in ("lists/partial", "apt/archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        (root / "preferences").touch()
        self.opts = [
            "-o", f"Dir::Etc::sourcelist={self.sources}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::Etc::preferences={root / 'preferences'}",
            "-o", "Dir::Etc::preferencesparts=-",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'apt'}",
            # Docker-derived images turn the package cache off; each
            # apt-cache call would parse every list again
            "-o", "Dir::Cache::pkgcache=pkgcache.bin",
            "-o", "Dir::Cache::srcpkgcache=srcpkgcache.bin",
            "-o", f"Dir::State::status={root / 'status'}",
            # the download dir is ours and root's; _apt could not write it
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Retries=3",
        ]

    def write_sources(self) -> None:
        keyrings = ["/usr/share/keyrings/debian-archive-keyring.gpg"]
        codename = self.kernel.suite.split("-")[0]
        # older releases' keys may leave the main keyring; the keyring
        # package keeps them in per-release files
        keyrings += sorted(str(p) for p in Path("/usr/share/keyrings").glob(
            f"debian-archive-{codename}-*.gpg"))
        keyrings = [k for k in keyrings if Path(k).exists()]
        if not keyrings:
            raise KernelFetchError(
                f"cannot fetch {self.kernel}: no Debian archive keyring in "
                f"/usr/share/keyrings (install debian-archive-keyring)")
        lines = [f"deb [signed-by={','.join(keyrings)}] {mirror} {suite} main"
                 for mirror, suite in self.kernel.sources()]
        _write_atomic(self.sources, "\n".join(lines) + "\n")

    def run(self, *args: str, cwd: Path | None = None) -> str:
        cmd = [args[0], *self.opts, *args[1:]]
        p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
        if p.returncode != 0:
            lines = (p.stderr or p.stdout).strip().splitlines() or ["(no output)"]
            err = next((ln for ln in lines if ln.startswith("E:")), lines[-1])
            raise KernelFetchError(f"cannot fetch {self.kernel}: "
                                   f"`{' '.join(args)}` failed: {err}")
        return p.stdout

    def update(self) -> None:
        self.write_sources()
        out = self.run("apt-get", "update", "-q")
        # apt-get update exits 0 when a source is merely unreachable
        errs = [ln for ln in out.splitlines() if ln.startswith(("Err:", "E:"))]
        if errs:
            raise KernelFetchError(f"cannot fetch {self.kernel}: apt-get update: {errs[0]}")

    def candidate(self, pkg: str) -> str:
        out = self.run("apt-cache", "policy", pkg)
        m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.M)
        if not m or m.group(1) == "(none)":
            raise KernelFetchError(f"cannot fetch {self.kernel}: no package {pkg} "
                                   f"in {', '.join(s for _, s in self.kernel.sources())}")
        return m.group(1)

    def depends(self, pkg: str, version: str) -> list[str]:
        """Package names in Depends (first alternative of each)."""
        out = self.run("apt-cache", "show", f"{pkg}={version}")
        m = re.search(r"^Depends:\s*(.*)$", out, re.M)
        if not m:
            return []
        names = []
        for dep in m.group(1).split(","):
            first = dep.split("|")[0].strip()
            names.append(first.split()[0])
        return names


@dataclasses.dataclass(frozen=True)
class KernelTree:
    """One kernel's packages extracted under the cache."""
    kernel: Kernel
    abi: str            # 6.1.0-57-amd64, what `uname -r` says
    version: str        # the Debian package version, 6.1.192-3
    root: Path          # dpkg-deb -x of image, headers, -common and kbuild
    packages: tuple[str, ...]

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.abi}"

    @property
    def modules(self) -> Path:
        for d in (self.root / "lib/modules" / self.abi, self.root / "usr/lib/modules" / self.abi):
            if d.is_dir():
                return d
        raise VMError(f"{self.kernel}: no lib/modules/{self.abi} in {self.root}")

    def guest_binds(self) -> list[tuple[str, str]]:
        """(path on the host, path in the guest) bind mounts that make the
        kernel's modules and headers appear where bcc and modprobe look:
        /lib/modules/<abi> (its build and source links are absolute, into
        /usr/src), the headers and the kbuild they link to."""
        binds = [(str(self.modules), f"/usr/lib/modules/{self.abi}")]
        for parent in ("usr/src", "usr/lib"):
            d = self.root / parent
            if not d.is_dir():
                continue
            for sub in sorted(d.iterdir()):
                if sub.name.startswith(("linux-headers-", "linux-kbuild-")) \
                        and not sub.is_symlink():
                    binds.append((str(sub), f"/{parent}/{sub.name}"))
        return binds

    def guest_links(self, guest_root: Path = Path("/")) -> list[tuple[str, str]]:
        """(guest path, target) of the packages' own symlinks next to what
        guest_binds mounts (/usr/src/linux-kbuild-6.1 -> ../lib/...), for
        the guest to create where its root has nothing at that path."""
        links = []
        d = self.root / "usr/src"
        for sub in sorted(d.iterdir()) if d.is_dir() else []:
            if sub.is_symlink() and not os.path.lexists(guest_root / f"usr/src/{sub.name}"):
                links.append((f"/usr/src/{sub.name}", os.readlink(sub)))
        return links


_resolved: dict[str, KernelTree] = {}


def fetch(kernel: Kernel, refresh: bool = True) -> KernelTree:
    """Resolve the kernel's ABI from its suite's metapackages, download its
    image, headers, -common headers and kbuild (once: cached), extract them
    and run depmod. Raises KernelFetchError naming the kernel and why.

    refresh=False skips apt-get update when this kernel was resolved before,
    so a run without network uses the cached kernel."""
    top = cache_dir()
    key = f"{top}:{kernel.name}"
    if key in _resolved:
        return _resolved[key]
    with _locked(top / "locks" / f"{kernel.name}.lock"):
        tree = _fetch_locked(kernel, top, refresh)
    _resolved[key] = tree
    return tree


def _fetch_locked(kernel: Kernel, top: Path, refresh: bool) -> KernelTree:
    apt = _Apt(kernel, top / "apt" / kernel.name)
    last = apt.root / "resolved.json"
    meta = None
    if refresh or not last.exists():
        try:
            apt.update()
            meta = _resolve(apt)
        except KernelFetchError as e:
            if not last.exists():
                raise
            meta = json.loads(last.read_text())
            _log(f"{e}; using the kernel resolved before: {meta['abi']}")
    else:
        meta = json.loads(last.read_text())
    tree_dir = top / "kernels" / f"{meta['abi']}_{meta['version']}"
    root = tree_dir / "root"
    if not (tree_dir / "complete").exists():
        _download_extract(apt, meta, tree_dir)
    _write_atomic(last, json.dumps(meta, indent=1))
    return KernelTree(kernel, meta["abi"], meta["version"], root, tuple(meta["packages"]))


def _resolve(apt: _Apt) -> dict:
    k = apt.kernel
    meta_img = f"linux-image-{k.flavour}"
    meta_hdr = f"linux-headers-{k.flavour}"
    img_ver = apt.candidate(meta_img)
    image = next((d for d in apt.depends(meta_img, img_ver)
                  if d.startswith("linux-image-") and d.endswith(f"-{k.flavour}")), None)
    if image is None:
        raise KernelFetchError(f"cannot fetch {k}: {meta_img} {img_ver} depends on no linux-image-*")
    abi = image[len("linux-image-"):]
    hdr_ver = apt.candidate(meta_hdr)
    headers = f"linux-headers-{abi}"
    if headers not in apt.depends(meta_hdr, hdr_ver):
        raise KernelFetchError(f"cannot fetch {k}: {meta_hdr} {hdr_ver} does not depend on "
                               f"{headers}, the headers of {image}")
    version = apt.candidate(image)
    hdeps = apt.depends(headers, apt.candidate(headers))
    common = [d for d in hdeps if d.startswith("linux-headers-") and d.endswith("-common")]
    kbuild = [d for d in hdeps if d.startswith("linux-kbuild-")]
    if not common or not kbuild:
        raise KernelFetchError(f"cannot fetch {k}: {headers} names no -common headers "
                               f"or linux-kbuild package in its Depends")
    pkgs = [image, headers, common[0], kbuild[0]]
    return {"kernel": k.name, "suite": k.suite, "abi": abi, "version": version,
            "packages": [f"{p}={apt.candidate(p)}" for p in pkgs]}


def _drop_old_trees(kernel: Kernel, current: Path) -> None:
    """Remove this kernel's earlier ABIs (the archive moved on), once they
    are a day old: a run started before the move may still be using one."""
    for meta in current.parent.glob("*/meta.json"):
        tree = meta.parent
        if tree == current:
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(meta.read_text())["kernel"] == kernel.name and \
                    time.time() - (tree / "complete").stat().st_mtime > 86400:
                _log(f"{kernel}: removing {tree.name}, superseded by {current.name}")
                shutil.rmtree(tree, ignore_errors=True)


def _download_extract(apt: _Apt, meta: dict, tree_dir: Path) -> None:
    k = apt.kernel
    tree_dir.parent.mkdir(parents=True, exist_ok=True)
    # under the lock any temporary directory of this tree is a killed run's
    for stale in tree_dir.parent.glob(f".{tree_dir.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    # everything happens in a temporary directory renamed into place at
    # the end, so an interrupted run leaves no half-extracted kernel
    tmp = Path(tempfile.mkdtemp(prefix=f".{tree_dir.name}.", dir=tree_dir.parent))
    tmp.chmod(0o755)
    try:
        debs = tmp / "debs"
        debs.mkdir()
        t0 = time.monotonic()
        _log(f"{k}: downloading {' '.join(meta['packages'])}")
        apt.run("apt-get", "download", "-q", *meta["packages"], cwd=debs)
        root = tmp / "root"
        for deb in sorted(debs.glob("*.deb")):
            p = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise KernelFetchError(f"cannot fetch {k}: dpkg-deb -x {deb.name}: "
                                       f"{p.stderr.strip()}")
        if not (root / "boot" / f"vmlinuz-{meta['abi']}").exists():
            raise KernelFetchError(f"cannot fetch {k}: the image package has no "
                                   f"boot/vmlinuz-{meta['abi']}")
        # the .deb ships no modules.dep: the postinst would have made it. depmod -b
        # reads <root>/lib/modules, where a merged-/usr release's kernel (trixie's: in
        # usr/lib/modules) has nothing: the link a merged-/usr root has is made
        if not (root / "lib").exists() and (root / "usr/lib/modules").is_dir():
            (root / "lib").symlink_to("usr/lib")
        p = subprocess.run(["depmod", "-b", str(root), meta["abi"]],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise KernelFetchError(f"cannot fetch {k}: depmod -b: {p.stderr.strip()}")
        shutil.rmtree(debs)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        (tmp / "complete").touch()
        if tree_dir.exists():  # a leftover without "complete"
            shutil.rmtree(tree_dir)
        os.rename(tmp, tree_dir)
        _log(f"{k}: {meta['abi']} ready in {time.monotonic() - t0:.1f} s")
        _drop_old_trees(k, tree_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- PVH image


def _pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 vmlinux has the Xen PVH entry note qemu boots by."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        pos, end = off, off + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _decompress_payload(payload: bytes) -> bytes | None:
    if payload[:6] == b"\xfd7zXZ\x00":
        # the kernel appends the uncompressed size after the xz stream
        return lzma.LZMADecompressor().decompress(payload)
    if payload[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=io.BytesIO(payload)).read()
    if payload[:4] == b"\x28\xb5\x2f\xfd" and shutil.which("zstd"):
        p = subprocess.run(["zstd", "-dc"], input=payload, capture_output=True)
        # zstd complains about the trailing size word but has written it all
        return p.stdout or None
    return None


def boot_image(tree: KernelTree) -> Path:
    """The uncompressed vmlinux when it has a PVH entry, else the bzImage.

    Under TCG the bzImage's own decompressor takes about 3 s before the
    kernel prints anything; qemu loads a PVH vmlinux directly (0.3 s)."""
    out = tree.root.parent / "vmlinux"
    nope = tree.root.parent / "vmlinux.none"
    if out.exists():
        return out
    if nope.exists():
        return tree.vmlinuz
    data = tree.vmlinuz.read_bytes()
    elf = None
    if data[0x202:0x206] == b"HdrS":
        setup_sects = data[0x1F1] or 4
        payload_offset, = struct.unpack_from("<I", data, 0x248)
        try:
            elf = _decompress_payload(data[(setup_sects + 1) * 512 + payload_offset:])
        except (lzma.LZMAError, OSError, EOFError):
            elf = None
    if elf and _pvh_entry(elf):
        _write_atomic(out, elf)
        return out
    nope.touch()
    return tree.vmlinuz


# ---------------------------------------------------------------- initramfs


def _modname(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def module_load_order(moddir: Path, wanted: list[str], kernel: Kernel) -> list[str]:
    """Module files (relative to moddir) to insmod, dependencies first."""
    deps: dict[str, list[str]] = {}
    files: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        files[_modname(mod)] = mod
        deps[mod] = rest.split()
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.exists():
        builtin = {_modname(ln) for ln in bfile.read_text().split()}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for d in deps.get(mod, []):
            visit(d)
        order.append(mod)

    for name in wanted:
        n = name.replace("-", "_")
        if n in files:
            visit(files[n])
        elif n not in builtin:
            raise VMError(f"{kernel}: module {name} is neither in modules.dep nor built in")
    return order


def _ko_bytes(path: Path) -> bytes:
    # busybox insmod passes the file to init_module as it is, so compressed
    # modules are unpacked here
    if path.name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True,
                              capture_output=True).stdout
    return path.read_bytes()


class _Cpio:
    """newc archive writer: the initramfs needs /dev/console, a device node,
    which an unprivileged tree copy could not hold."""

    def __init__(self):
        self.buf = bytearray()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))
        self.ino += 1
        self.buf += hdr.encode() + nb
        self.buf += b"\0" * (-len(self.buf) % 4)
        self.buf += data
        self.buf += b"\0" * (-len(self.buf) % 4)

    def dir(self, name: str):
        self.add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644):
        self.add(name, stat.S_IFREG | perm, data)

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        self.buf += b"\0" * (-len(self.buf) % 512)
        return bytes(self.buf)


INIT = r"""#!/bin/busybox sh
# vmtest initramfs: load the modules, overlay a tmpfs on the host's root
# (9p, read-only), prepare it for systemd and switch_root to it
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "vmtest-init: start"
fail() {
    echo "vmtest-init: FAILED: $*"
    echo o > /proc/sysrq-trigger
    sleep 10
}
for m in $(cat /modules.order); do
    insmod "/modules/$m" || fail "insmod $m"
done
ctl=
msize=262144
for w in $(cat /proc/cmdline); do
    case "$w" in
        vmtest.ctl=*) ctl="${w#vmtest.ctl=}" ;;
        vmtest.msize=*) msize="${w#vmtest.msize=}" ;;
    esac
done
[ -n "$ctl" ] || fail "no vmtest.ctl= on the kernel command line"
mkdir -p /host /lower /rw /newroot
# cache=loose: the lower layer is read-only and the boot is short, so the
# guest may cache what it reads; it is most of the boot time otherwise
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=$msize hostroot /host \
    || fail "mount 9p hostroot"
# the guest's root: another release's root shared as guestroot (vmtest.root=1), else the
# host's own
lower=/host
if grep -q 'vmtest.root=1' /proc/cmdline; then
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=$msize guestroot /lower \
        || fail "mount 9p guestroot"
    lower=/lower
fi
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=$lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "mount overlay"
# fresh kernel file systems for systemd: under them the 9p root shows the
# host's own /proc, /sys, /dev and /run
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mount -t tmpfs -o mode=0755,nosuid,nodev,size=20% tmpfs /newroot/run
mkdir -p /newroot/run/vmtest/results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=$msize results /newroot/run/vmtest/results \
    || fail "mount 9p results"
[ -d "/host$ctl/root" ] || fail "no $ctl/root on the host root"
cp -a "/host$ctl/root/." /newroot/ || fail "copy $ctl/root"
while read -r src dst; do
    [ -n "$src" ] || continue
    mkdir -p "/newroot$dst"
    mount --bind "/host$src" "/newroot$dst" || fail "bind $src $dst"
done < "/host$ctl/binds"
# host files the guest must not see (HIDDEN in vm.py says why); removing
# them from the overlay leaves the host's untouched
while read -r path; do
    [ -n "$path" ] && rm -f "/newroot$path"
done < "/host$ctl/hide"
echo "vmtest-init: switch_root"
exec switch_root /newroot /lib/systemd/systemd
"""


def initramfs(tree: KernelTree) -> Path:
    """Build (once per content) the kernel's initramfs: busybox-static, the
    modules in dependency order, and INIT."""
    if not BUSYBOX.exists():
        raise VMError(f"{BUSYBOX} is missing: bash scripts/dev.sh vm-setup installs busybox-static")
    moddir = tree.modules
    order = module_load_order(moddir, INITRAMFS_MODULES, tree.kernel)
    bb = BUSYBOX.read_bytes()
    h = hashlib.sha256(INIT.encode() + bb + "\n".join(order).encode()).hexdigest()[:16]
    out = tree.root.parent / f"initramfs-{h}.cpio"
    if out.exists():
        return out
    c = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "modules"):
        c.dir(d)
    c.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    c.file("bin/busybox", bb, 0o755)
    c.file("init", INIT.encode(), 0o755)
    names = []
    for rel in order:
        name = _modname(rel) + ".ko"
        c.file(f"modules/{name}", _ko_bytes(moddir / rel))
        names.append(name)
    c.file("modules.order", ("\n".join(names) + "\n").encode())
    _write_atomic(out, c.finish())
    # another run may be about to boot an older one: only day-old ones go
    for old in tree.root.parent.glob("initramfs-*.cpio"):
        if old != out and time.time() - old.stat().st_mtime > 86400:
            old.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- booting


@dataclasses.dataclass
class BootResult:
    kernel: Kernel
    abi: str
    accel: str
    results_dir: Path
    console_log: Path       # the serial console: kernel, init, systemd, the script
    output_log: Path        # the script's stdout and stderr, written by the guest
    qemu_log: Path          # qemu's own stderr
    exit_status: int | None  # the script's, None when it never finished
    timed_out: bool
    qemu_returncode: int | None
    boot_s: float | None    # qemu start -> guest unit start (host wall clock)
    run_s: float | None     # guest unit start -> exit status written
    total_s: float          # qemu start -> qemu gone
    marks: dict[str, float]  # console marker -> seconds after qemu start
    retried: str | None = None  # where the files of a first attempt lost to TCG_RACE are

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        """One paragraph for an assertion message."""
        if self.timed_out:
            where = ("the script was running" if self.boot_s is not None
                     else "the guest unit never started")
            head = f"{self.kernel} timed out after {self.total_s:.0f} s ({where})"
        elif self.exit_status is None:
            head = (f"{self.kernel}: the guest stopped (qemu exit {self.qemu_returncode}) "
                    f"without writing an exit status")
        else:
            head = f"{self.kernel}: guest script exited {self.exit_status}"
        text = (f"{head}; console {self.console_log}, output {self.output_log}\n"
                f"--- console tail ---\n{self.console_tail()}")
        with contextlib.suppress(OSError):
            qemu = self.qemu_log.read_text(errors="replace").strip()
            if qemu:
                # "terminating on signal 15 from pid N", a KVM emulation failure
                text += f"\n--- {self.qemu_log.name} ---\n" + "\n".join(qemu.splitlines()[-10:])
        return text


def _guest_script_cmd(script: str | Path, ctl_root: Path) -> str:
    """The guest command line for the script: a path on the host root runs
    where it is (the guest sees the same path); text becomes a file."""
    if isinstance(script, Path) or ("\n" not in script and os.path.isfile(script)):
        p = Path(script).resolve()
        if os.access(p, os.X_OK):
            return shlex.quote(str(p))
        return f"/bin/bash {shlex.quote(str(p))}"
    dst = ctl_root / "run/vmtest/script"
    dst.write_text(script if script.endswith("\n") else script + "\n")
    if script.startswith("#!"):
        dst.chmod(0o755)
        return "/run/vmtest/script"
    return "/bin/bash /run/vmtest/script"


WRAPPER = """#!/bin/bash
# ExecStart of vmtest.service: run the script, keep its output and exit
# status in the results share, then power the guest off
R={results}
echo "{mark_unit}" > /dev/console
{cmd} 2>&1 < /dev/null | tee "$R/output.log"
status=${{PIPESTATUS[0]}}
echo "$status" > "$R/.exit_status.tmp" && mv "$R/.exit_status.tmp" "$R/exit_status"
echo "{mark_done} $status" > /dev/console
# systemd kills this unit's cgroup on the way down, so the fallback moves to
# the root cgroup first; it fires only if the orderly poweroff stalls
( echo $BASHPID > /sys/fs/cgroup/cgroup.procs
  sleep {fallback}
  echo "vmtest: poweroff stalled, sysrq o" > /dev/console
  echo o > /proc/sysrq-trigger ) &
systemctl poweroff --no-block
"""

UNIT = """[Unit]
Description=vmtest guest script
# the script starts on a booted system; it does not hold up the boot
# itself (Type=exec), so `systemctl is-system-running --wait` inside it returns
After=multi-user.target

[Service]
Type=exec
EnvironmentFile={env}
WorkingDirectory={cwd}
ExecStart=/bin/bash /run/vmtest/wrapper.sh
StandardOutput=journal+console
StandardError=inherit
SyslogIdentifier=vmtest
TimeoutStartSec=infinity
"""

SYSTEM_CONF = """[Manager]
# a guest that stops is a guest that is done: do not wait 90 s per unit
DefaultTimeoutStopSec=10s
"""


def _env_file(env: dict[str, str]) -> str:
    lines = []
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) or "\n" in v:
            raise VMError(f"guest environment: cannot pass {k!r}")
        # systemd's EnvironmentFile and sh read double quotes alike
        lines.append(f'{k}="' + re.sub(r'([\\"$`])', r"\\\1", v) + '"')
    return "\n".join(lines) + "\n"


def _make_ctl(tree: KernelTree, script, results_dir: Path, env: dict[str, str],
              mask: list[str], guest_root: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The boot's control directory, on the host root so the initramfs reads
    it through the 9p share: root/ is copied over the guest's root, binds
    lists the bind mounts (from the host root: with another release's root,
    also the checkout, at its own path)."""
    top = cache_dir() / "run"
    top.mkdir(parents=True, exist_ok=True)
    # a boot removes its own; these are from runs that were killed
    for stale in top.glob("boot-*"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 6 * 3600:
                shutil.rmtree(stale, ignore_errors=True)
    ctl = Path(tempfile.mkdtemp(prefix="boot-", dir=top))
    root = ctl / "root"
    (root / "run/vmtest").mkdir(parents=True)
    sysd = root / "etc/systemd/system"
    (sysd / "multi-user.target.wants").mkdir(parents=True)
    (root / "etc/systemd/system.conf.d").mkdir(parents=True)
    for unit in mask:
        (sysd / unit).symlink_to("/dev/null")
    gens = root / "etc/systemd/system-generators"
    gens.mkdir(parents=True)
    for gen in MASKED_GENERATORS:
        (gens / gen).symlink_to("/dev/null")
    full_env = {
        "VMTEST_RESULTS": GUEST_RESULTS,
        "VMTEST_REPO": str(REPO),
        "VMTEST_KERNEL": tree.kernel.name,
        "VMTEST_ABI": tree.abi,
        **env,
    }
    (root / "run/vmtest/env").write_text(_env_file(full_env))
    cmd = _guest_script_cmd(script, root)
    (root / "run/vmtest/wrapper.sh").write_text(WRAPPER.format(
        results=GUEST_RESULTS, mark_unit=MARK_UNIT, mark_done=MARK_DONE, cmd=cmd, fallback=30))
    (sysd / "vmtest.service").write_text(UNIT.format(env=GUEST_ENV, cwd=REPO))
    (sysd / "multi-user.target.wants/vmtest.service").symlink_to("../vmtest.service")
    (root / "etc/systemd/system.conf.d/vmtest.conf").write_text(SYSTEM_CONF)
    # the journal in RAM: the overlay's upper layer is RAM anyway, and the
    # flush to /var/log/journal sat on the boot's critical chain
    (root / "etc/systemd/journald.conf.d").mkdir(parents=True)
    (root / "etc/systemd/journald.conf.d/vmtest.conf").write_text(
        "[Journal]\nStorage=volatile\n")
    # the host's fstab describes the host's disks; the guest has none
    (root / "etc/fstab").write_text("# vmtest guest: root is an overlay set up by the initramfs\n")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    # Debian's tmp.conf empties /tmp at boot: through the overlay that is a
    # whiteout per host file (half a minute here), and it would hide a
    # checkout that lives under /tmp
    (root / "etc/tmpfiles.d").mkdir(parents=True)
    (root / "etc/tmpfiles.d/tmp.conf").write_text("d /tmp 1777 root root -\n")
    for path, target in tree.guest_links(guest_root or Path("/")):
        link = root / path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    binds = tree.guest_binds()
    if guest_root is not None:
        binds.append((str(REPO), str(REPO)))
    for src, dst in binds:
        if any(ch.isspace() for ch in src + dst):
            raise VMError(f"cannot bind {src!r}: the initramfs splits paths on white space")
    (ctl / "binds").write_text("".join(f"{s} {d}\n" for s, d in binds))
    (ctl / "hide").write_text("".join(f"{p}\n" for p in HIDDEN))
    return ctl, full_env


def _qemu_path(p: Path | str) -> str:
    return str(p).replace(",", ",,")


def qemu_command(tree: KernelTree, initrd: Path, ctl: Path, results_dir: Path,
                 console: Path, memory_mb: int, cpus: int, acc: str,
                 extra_cmdline: str = "", guest_root: Path | None = None) -> list[str]:
    cmdline = " ".join(filter(None, [
        "console=ttyS0", "panic=-1", f"vmtest.ctl={ctl}",
        "vmtest.root=1" if guest_root is not None else "",
        # a fixed target: the host's default.target may be graphical
        "systemd.unit=multi-user.target",
        "systemd.unified_cgroup_hierarchy=1",
        "fstab=no",
        # under TCG every mitigation costs emulated instructions
        "mitigations=off",
        "random.trust_cpu=on",
        extra_cmdline,
    ]))
    icount = acc == "tcg" and bool(os.environ.get("AUDITD_LITE_VM_ICOUNT"))
    cmd = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-no-reboot",
           "-display", "none", "-monitor", "none",
           # icount: one vCPU (with two, 6.1 hung bringing up the second)
           "-M", "pc", "-m", str(memory_mb), "-smp", str(1 if icount else cpus)]
    if acc == "kvm":
        cmd += ["-accel", "kvm", "-cpu", "host"]
    elif icount:
        # a guest clock that counts instructions (1 ns each), not the host's time: what a
        # guest measures is then what it executed, whatever else this machine runs (the
        # benches' figures in a guest, bench/guest_bench.sh); icount needs one TCG thread
        cmd += ["-accel", "tcg,thread=single", "-icount", "shift=0,sleep=off", "-cpu", "max"]
    else:
        cmd += ["-accel", "tcg,thread=multi", "-cpu", "max"]
    cmd += [
        "-kernel", str(boot_image(tree)), "-initrd", str(initrd), "-append", cmdline,
        "-chardev", f"file,id=con,path={_qemu_path(console)}", "-serial", "chardev:con",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={_qemu_path(results_dir)},mount_tag=results,security_model=none,"
                   "multidevs=remap",
        "-device", "virtio-rng-pci",
    ]
    if guest_root is not None:
        cmd[-2:-2] = ["-virtfs", f"local,path={_qemu_path(guest_root)},mount_tag=guestroot,"
                                 "security_model=none,readonly=on,multidevs=remap"]
    return cmd


# Under TCG with a thread per vCPU, a kernel patching its own text (static keys, static
# calls: every tracepoint attach and detach) while the other vCPU runs it can execute the
# int3 the patch left only for an instant, after the kernel's handler has forgotten it:
# "int3: 0000 [#1]" at a call site whose bytes are already whole again, then a panic. Seen in
# 6.12's sched_clock_cpu 2.6 s into a boot, and in syscall_trace_enter 535 s into a guest
# run, each time in one of some thirty guest runs. It is the emulator's race, not the
# kernel's or ours, so such a guest is run once more. Single-threaded TCG would not race,
# but measured on 6.12 it took 1328 s for the guest's run against 766 s: a retry in it
# would not fit the CI's time, and two races in a row are unlikely enough.
TCG_RACE = re.compile(r"(Oops: )?int3: [0-9a-f]{4} \[#\d+\]")  # 6.8 added "Oops: "


def boot(kernel: Kernel, script: str | Path, results_dir: str | Path, timeout_s: float,
         memory_mb: int = 3072, cpus: int = 2, env: dict[str, str] | None = None,
         mask: list[str] | None = None, extra_cmdline: str = "",
         root: Path | None = None) -> BootResult:
    """_boot_once, and once more if the first attempt died of TCG_RACE (at any point: boot
    or script); the first attempt's files are moved to results_dir/raced, named in
    ``retried``. Any other failure, or a second race, is returned as it is."""
    res = _boot_once(kernel, script, results_dir, timeout_s, memory_mb, cpus, env, mask,
                     extra_cmdline, root)
    if res.ok or res.timed_out or res.exit_status is not None or res.accel != "tcg":
        return res
    try:
        raced = TCG_RACE.search(res.console_log.read_text(errors="replace")) is not None
    except OSError:
        raced = False
    if not raced:
        return res
    # the first attempt's files (console, the guest's partial logs) kept apart, so that
    # nothing the retry reads or writes is the first attempt's
    kept = res.results_dir / "raced"
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir()
    for f in res.results_dir.iterdir():
        if f.is_file():
            f.rename(kept / f.name)
    _log(f"{kernel}: the guest died of TCG's int3 race ({kept}/console.log): booting again")
    res = _boot_once(kernel, script, results_dir, timeout_s, memory_mb, cpus, env, mask,
                     extra_cmdline, root)
    res.retried = str(kept)
    return res


def _boot_once(kernel: Kernel, script: str | Path, results_dir: str | Path, timeout_s: float,
               memory_mb: int = 3072, cpus: int = 2, env: dict[str, str] | None = None,
               mask: list[str] | None = None, extra_cmdline: str = "",
               root: Path | None = None) -> BootResult:
    """Boot `kernel`, run `script` in a systemd unit (vmtest.service) once
    multi-user.target is reached, and power off.

    script: a path (pathlib.Path, or a str naming an existing file) runs
    where it is; other text is written to a file and run with bash (or its
    own #! line). The guest sees the host's root, so the repository is at
    the same path ($VMTEST_REPO; also the unit's working directory).
    results_dir: writable in the guest at /run/vmtest/results
    ($VMTEST_RESULTS); gets output.log and exit_status from the guest and
    console.log and qemu.log from the host.
    env: extra environment for the script, besides VMTEST_RESULTS,
    VMTEST_REPO, VMTEST_KERNEL and VMTEST_ABI (all also in /run/vmtest/env).
    mask: units to mask instead of MASKED_UNITS.
    root: the guest's root file system, another release's (roots.vm_root);
    default this machine's. The checkout is bound into it at its own path.
    timeout_s counts from qemu's start; at it qemu is killed and the result
    says timed_out."""
    if shutil.which("qemu-system-x86_64") is None:
        raise VMError("qemu-system-x86_64 is not installed: bash scripts/dev.sh vm-setup")
    results_dir = Path(results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in ("exit_status", "output.log", "console.log", "console.timed", "qemu.log"):
        with contextlib.suppress(FileNotFoundError):
            (results_dir / name).unlink()
    tree = fetch(kernel)
    initrd = initramfs(tree)
    acc = accel()
    ctl, _ = _make_ctl(tree, script, results_dir, env or {},
                       MASKED_UNITS if mask is None else mask, root)
    console = results_dir / "console.log"
    qlog = results_dir / "qemu.log"
    cmd = qemu_command(tree, initrd, ctl, results_dir, console, memory_mb, cpus, acc,
                       extra_cmdline, root)
    (results_dir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    marks: dict[str, float] = {}
    timed_out = False
    console.touch()
    t0 = time.monotonic()
    with open(qlog, "wb") as qerr, open(console, "rb") as con, \
            open(results_dir / "console.timed", "w") as timed:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qerr, stderr=qerr,
                                start_new_session=True)
        try:
            partial = b""
            while True:
                rc = proc.poll()
                chunk = con.read()
                if chunk:
                    now = time.monotonic() - t0
                    # each console line with the host time it was seen: where
                    # a boot spends its time, on the clock the timeout uses
                    lines = (partial + chunk).split(b"\n")
                    partial = lines.pop()
                    for ln in lines:
                        text = ln.decode(errors="replace").rstrip("\r")
                        timed.write(f"{now:8.2f} {text}\n")
                        for mark in (MARK_FIRST, MARK_INIT, MARK_SWITCH, MARK_UNIT, MARK_DONE):
                            if mark not in marks and mark in text:
                                marks[mark] = now
                if rc is not None:
                    break
                if time.monotonic() - t0 > timeout_s:
                    timed_out = True
                    break
                time.sleep(0.05)
        finally:
            _stop(proc)
    total = time.monotonic() - t0
    if os.environ.get("AUDITD_LITE_VM_KEEP") == "1":
        # qemu.cmd names this directory: kept, the boot can be rerun by hand
        _log(f"kept {ctl} (AUDITD_LITE_VM_KEEP=1)")
    else:
        shutil.rmtree(ctl, ignore_errors=True)
    status = None
    with contextlib.suppress(FileNotFoundError, ValueError):
        status = int((results_dir / "exit_status").read_text().strip())
    unit = marks.get(MARK_UNIT)
    done = marks.get(MARK_DONE)
    return BootResult(
        kernel=kernel, abi=tree.abi, accel=acc, results_dir=results_dir,
        console_log=console, output_log=results_dir / "output.log", qemu_log=qlog,
        exit_status=status, timed_out=timed_out,
        qemu_returncode=None if timed_out else proc.returncode,
        boot_s=unit, run_s=(done - unit) if unit is not None and done is not None else None,
        total_s=total, marks=marks)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def guest_root(kernel: Kernel, debs: dict[str, Path] | None = None) -> Path | None:
    """The root the kernel's guest boots: its release's (roots.vm_root, made with the packages
    of that release built from this tree, or debs), or None for this machine's."""
    if kernel.root is None:
        return None
    try:
        from . import roots
    except ImportError:
        import roots  # type: ignore[no-redef]
    try:
        return roots.vm_root(kernel.root, debs or roots.build_debs(kernel.root))
    except roots.RootError as e:
        raise VMError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """python3 tests/vm/vm.py KERNEL SCRIPT [RESULTS_DIR]: boot one kernel by
    hand (debugging); prints where the console log is."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("kernel", help="a name from tests/vm/kernels.py, or 'fetch' for all")
    ap.add_argument("script", nargs="?", default="systemctl is-system-running --wait; "
                    "systemd-analyze; systemd-analyze blame | head -20")
    ap.add_argument("results", nargs="?", default=None)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args(argv)
    if a.kernel == "fetch":
        for k in _kernels.KERNELS:
            t = fetch(k)
            print(f"{k.name}\t{t.abi}\t{t.version}\t{initramfs(t)}")
        return 0
    results = Path(a.results or tempfile.mkdtemp(prefix="vmtest-"))
    kernel = _kernels.by_name(a.kernel)
    res = boot(kernel, a.script, results, a.timeout, root=guest_root(kernel))
    print(res.describe() if not res.ok else
          f"{res.kernel}: ok, unit started at {res.boot_s:.1f} s, ran {res.run_s:.1f} s, "
          f"total {res.total_s:.1f} s; results in {results}")
    print(f"marks: {json.dumps({k: round(v, 2) for k, v in res.marks.items()})}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
