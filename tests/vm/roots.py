"""Debian release roots for testing the packages on another release than this machine's.

    base = roots.base("trixie")              # debootstrap --variant=minbase, cached
    with roots.Chroot(base, overlay=True) as root:   # a throwaway layer over it
        root.run("apt-get", "install", "-y", "./auditd-lite_...deb")
    vmroot = roots.vm_root("trixie", debs)  # what a VM guest boots into (vm.boot(root=...))

Everything lives under the VM tier's cache (vm.cache_dir()/roots/<release>/): the base root,
the VM root made from it, and apt's archive of the .debs downloaded into either (kept, so a
second run downloads nothing it already has). A root is built in a temporary directory
renamed into place with a `complete` marker; a run killed half way leaves only the temporary
directory, which the next build removes. Failing to fetch raises RootError with one sentence.

Commands run in the root through `unshare -m` (a private mount namespace: /proc, /sys, /dev,
the checkout and the overlay vanish with the process, whatever happens) and `chroot`.
Standard library only: the host side of the VM tier runs under any python3.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

try:
    from . import vm
except ImportError:  # imported as a top-level module (tests/vm on sys.path)
    import vm  # type: ignore[no-redef]

_locked = vm._locked
REPO = vm.REPO
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# what a VM guest needs in its root besides the packages' own dependencies: systemd as PID 1,
# the tools the guest tests run (gcc for tests/progs, unshare and setpriv, systemd-run) and
# pytest, all from the release itself
VM_PACKAGES = ["systemd", "systemd-sysv", "dbus", "kmod", "procps", "util-linux", "gcc", "libc6-dev",
               "python3-pytest"]

MOUNT_AND_CHROOT = r"""
set -e
root=$1 lower=$2 upper=$3 work=$4 repo=$5 archives=$6
shift 6
if [ -n "$lower" ]; then
    mount -t overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" overlay "$root"
fi
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mkdir -p "$root$repo" "$archives" "$root/var/cache/apt/archives"
mount --bind "$repo" "$root$repo"
mount -o remount,bind,ro "$root$repo"
mount --bind "$archives" "$root/var/cache/apt/archives"
exec chroot "$root" "$@"
"""


class RootError(RuntimeError):
    """A release root cannot be built (one sentence says why)."""


def cache_dir() -> Path:
    return vm.cache_dir() / "roots"


def releases() -> dict[str, dict]:
    return tomllib.loads((REPO / "packaging/releases.toml").read_text())


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or ["(no output)"]
    return next((ln for ln in reversed(lines) if ln.startswith(("E:", "W: Failure", "Err:"))), lines[-1])


def sources(release: str) -> str:
    """The release with its -updates and -security pockets: what an installed Debian reads."""
    return (f"deb {MIRROR} {release} main\ndeb {MIRROR} {release}-updates main\n"
            f"deb {SECURITY} {release}-security main\n")


def _build(dest: Path, make) -> Path:
    """dest, made by make(tmp) in a temporary directory renamed into place, unless complete."""
    if (dest / "complete").exists():
        return dest / "root"
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)
    try:
        make(tmp)
        (tmp / "complete").touch()
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / "root"


def base(release: str) -> Path:
    """`debootstrap --variant=minbase RELEASE` with the release's apt sources, built once."""
    if release not in releases():
        raise RootError(f"no release {release!r} in packaging/releases.toml")
    if shutil.which("debootstrap") is None:
        raise RootError("debootstrap is not installed: bash scripts/dev.sh vm-setup installs it")
    top = cache_dir() / release

    def make(tmp: Path) -> None:
        t0 = time.monotonic()
        root = tmp / "root"
        p = subprocess.run(["debootstrap", "--variant=minbase", f"--keyring={KEYRING}",
                            f"--cache-dir={_archives(release)}", release, str(root), MIRROR],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RootError(f"cannot build a {release} root: debootstrap failed: "
                            f"{_last_error(p.stdout + p.stderr)}")
        (root / "etc/apt/sources.list").write_text(sources(release))
        (tmp / "meta.json").write_text(json.dumps({"release": release, "built": time.time(),
                                                   "seconds": round(time.monotonic() - t0, 1)}))

    with _locked(top / "lock"):
        return _build(top / "base", make)


def _archives(release: str) -> Path:
    d = cache_dir() / release / "archives"
    (d / "partial").mkdir(parents=True, exist_ok=True)
    return d


class Chroot:
    """Commands run in a root: directly in it, or (overlay=True) in a throwaway overlay of it,
    removed on leaving the block."""

    def __init__(self, root: Path, overlay: bool = False, release: str | None = None):
        self.release = release or json.loads((root.parent / "meta.json").read_text())["release"]
        self.lower = root if overlay else None
        self.tmp = None
        self.root = root

    def __enter__(self) -> "Chroot":
        if self.lower is not None:
            # the overlay's upper layer in RAM: an install writes some 700 MB there, and
            # removing as many files from this machine's disk (ext4 with discard) took
            # minutes under load; a killed run's layer goes at the next run, 6 hours on
            shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else cache_dir()
            for stale in shm.glob("auditd-lite-overlay-*"):
                with contextlib.suppress(OSError):
                    if time.time() - stale.stat().st_mtime > 6 * 3600:
                        shutil.rmtree(stale, ignore_errors=True)
            self.tmp = Path(tempfile.mkdtemp(prefix="auditd-lite-overlay-", dir=shm))
            for d in ("upper", "work", "merged"):
                (self.tmp / d).mkdir()
            self.root = self.tmp / "merged"
        # apt and pip in the root reach the archive as this machine does
        with contextlib.suppress(OSError):
            self.write("/etc/resolv.conf", Path("/etc/resolv.conf").read_bytes())
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, path: str, data: bytes) -> None:
        """A file in the root (in the overlay's upper layer when there is one)."""
        top = self.tmp / "upper" if self.tmp is not None else self.root
        dest = top / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        dest.write_bytes(data)

    def copy_in(self, src: Path, path: str) -> str:
        self.write(path, src.read_bytes())
        return path

    def run(self, *cmd: str, timeout: float = 1800, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        lower = "" if self.lower is None else str(self.lower)
        upper = work = ""
        if self.tmp is not None:
            upper, work = str(self.tmp / "upper"), str(self.tmp / "work")
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
                    "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "/bin/bash", "-c", MOUNT_AND_CHROOT,
                            "in-root", str(self.root), lower, upper, work, str(REPO),
                            str(_archives(self.release)), "/usr/bin/env", "-i",
                            *(f"{k}={v}" for k, v in full_env.items()), *cmd],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RootError(f"in the {self.release} root, `{' '.join(cmd)}` failed (exit {p.returncode}): "
                            f"{_last_error(p.stderr or p.stdout)}")
        return p

    def apt_update(self) -> None:
        p = self.run("apt-get", "update", "-q", check=False)
        errs = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith(("Err:", "E:", "W: Failed"))]
        if p.returncode != 0 or errs:
            raise RootError(f"cannot update the {self.release} root's package lists: "
                            f"{errs[0] if errs else _last_error(p.stderr)}")

    def installed(self, pkg: str) -> bool:
        p = self.run("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
        return "install ok installed" in p.stdout


def link_headers(root: Chroot, kernel_release: str) -> None:
    """/lib/modules/<running kernel>/build -> the release's newest installed headers, as
    scripts/dev.sh does on a host whose kernel has none of its own (offsets come from BTF)."""
    p = root.run("sh", "-c", "ls -d /usr/src/linux-headers-*-$(dpkg --print-architecture) | sort -V | tail -n 1")
    build = p.stdout.strip()
    if not build:
        raise RootError(f"the {root.release} root has no kernel headers under /usr/src")
    common = build.rsplit("-", 1)[0] + "-common"
    root.run("sh", "-c", f'mkdir -p /lib/modules/{kernel_release} && ln -sfn {build} /lib/modules/{kernel_release}/build '
                         f'&& ln -sfn $( [ -d {common} ] && echo {common} || echo {build}) /lib/modules/{kernel_release}/source')


def build_debs(release: str | None = None) -> dict[str, Path]:
    """{package: dist/<package>_<version>+deb<N>_<arch>.deb}: the packages of a release of
    packaging/releases.toml (default: this machine's), built from this checkout by
    packaging/build-deb.sh."""
    p = subprocess.run(["bash", "packaging/build-deb.sh", *([release] if release else [])],
                       capture_output=True, text=True, cwd=REPO, timeout=900)
    if p.returncode != 0:
        raise RootError(f"packaging/build-deb.sh {release or ''} failed: {_last_error(p.stderr)}")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    debs = {}
    for line in p.stdout.split():
        path = REPO / line
        name, version, rest = path.name.split("_")
        if rest != f"{arch}.deb" or "+deb" not in version or not path.is_file():
            raise RootError(f"packaging/build-deb.sh printed {line}, not a package it built")
        debs[name] = path
    return debs


def _debs_key(debs: dict[str, Path]) -> str:
    """What a VM root depends on of the packages: their Depends and Recommends."""
    fields = []
    for name in sorted(debs):
        p = subprocess.run(["dpkg-deb", "-f", str(debs[name]), "Depends", "Recommends"],
                           capture_output=True, text=True, check=True)
        fields.append(f"{name}\n{p.stdout}")
    return "\n".join(fields)


def vm_root(release: str, debs: dict[str, Path]) -> Path:
    """The root a VM guest of the release boots (over 9p, read-only under a tmpfs overlay):
    the base root, systemd and the guest tests' tools (VM_PACKAGES), and every dependency and
    recommendation of the packages, installed by apt from the release as `apt install` of the
    packages installs them, the packages themselves then purged. The guest, which has no
    network, installs the packages from the tree into it with nothing left to fetch. Built
    once per content of the packages' Depends and Recommends and VM_PACKAGES."""
    b = base(release)
    key = hashlib.sha256((_debs_key(debs) + "\n".join(VM_PACKAGES)).encode()).hexdigest()[:16]
    top = cache_dir() / release

    def make(tmp: Path) -> None:
        t0 = time.monotonic()
        root = tmp / "root"
        p = subprocess.run(["cp", "-a", str(b), str(root)], capture_output=True, text=True)
        if p.returncode != 0:
            raise RootError(f"cannot copy the {release} base root: {p.stderr.strip()}")
        (tmp / "meta.json").write_text(json.dumps({"release": release}))
        with Chroot(root, release=release) as r:
            r.apt_update()
            r.run("apt-get", "install", "-y", "-q", *VM_PACKAGES)
            names = [r.copy_in(d, f"/tmp/{d.name}") for d in debs.values()]
            r.run("apt-get", "install", "-y", "-q", *names)
            r.run("apt-get", "purge", "-y", "-q", *debs)
            r.run("rm", "-rf", *names, "/var/lib/auditd-lite", "/etc/resolv.conf")
        (tmp / "meta.json").write_text(json.dumps({"release": release, "built": time.time(),
                                                   "seconds": round(time.monotonic() - t0, 1)}))

    with _locked(top / "lock"):
        root = _build(top / f"vm-{key}", make)
        # another content's VM roots, a day after this one was made
        for old in top.glob("vm-*"):
            if old != root.parent and time.time() - (root.parent / "complete").stat().st_mtime > 86400:
                shutil.rmtree(old, ignore_errors=True)
    return root
