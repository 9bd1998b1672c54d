"""The packages on each Debian release of packaging/releases.toml other than this machine's (whose
own tier is tests/test_package.py): in the release's root (roots.base: debootstrap'd once and
cached), a throwaway overlay, the packages built from this tree for that release are installed
by apt with their dependencies from the release's archive, and every command they ship runs
from the installed files under the release's python3 (tests/pkgsmoke.py), capturing on this
machine's kernel with the release's bcc. A root that cannot be fetched fails, never skips."""

from __future__ import annotations

import json
import os
import time

import pytest

import conftest
from conftest import REPO, build_debs

import roots

pytestmark = [pytest.mark.release, pytest.mark.kernel]


def this_release() -> str:
    for line in open("/etc/os-release"):
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


OTHERS = [r for r in roots.releases() if r != this_release()]


@pytest.mark.parametrize("release", OTHERS)
def test_every_command_in_release_root(release):
    """In a fresh overlay of the release's root: `apt-get install` of both packages succeeds
    with dependencies from the release, the installed versions are the tree's, and every
    command the installed CLI ships runs (pkgsmoke) under the release's own python3."""
    rel = roots.releases()[release]
    debs = build_debs(release)
    t0 = time.monotonic()
    try:
        base = roots.base(release)
    except roots.RootError as e:
        pytest.fail(str(e), pytrace=False)
    t_base = time.monotonic()
    out = REPO / "build/release" / release
    out.mkdir(parents=True, exist_ok=True)
    with roots.Chroot(base, overlay=True) as r:
        try:
            r.apt_update()
            names = [r.copy_in(d, f"/tmp/{d.name}") for d in debs.values()]
            p = r.run("apt-get", "install", "-y", "-q", *names)
            (out / "apt.log").write_text(p.stdout + p.stderr)
            t_install = time.monotonic()
            for name, deb in debs.items():
                version = deb.name.split("_")[1]
                q = r.run("dpkg-query", "-W", "-f=${Status} ${Version}", name)
                assert q.stdout == f"install ok installed {version}", (name, q.stdout)
            roots.link_headers(r, os.uname().release)
        except roots.RootError as e:
            pytest.fail(str(e), pytrace=False)
        p = r.run("python3", str(REPO / "tests/pkgsmoke.py"), "/tmp/pkgsmoke", check=False)
        t_smoke = time.monotonic()
    (out / "pkgsmoke.json").write_text(p.stdout)
    assert p.returncode == 0, p.stderr[-5000:]
    report = json.loads(p.stdout)
    assert f"{rel['number']} ({release})" in report["release"], report["release"]
    assert report["python"].startswith(rel["python"] + ".") and report["lake"] is True, report
    summary = {"release": release, "python": report["python"], "base_s": round(t_base - t0, 1),
               "install_s": round(t_install - t_base, 1), "commands_s": round(t_smoke - t_install, 1),
               "commands": sorted(report["commands"])}
    (out / "summary.json").write_text(json.dumps(summary) + "\n")
    conftest.TIER_SUMMARY.append(
        f"release {release} (Python {report['python']}): root {summary['base_s']} s, install "
        f"{summary['install_s']} s, every command {summary['commands_s']} s: {', '.join(summary['commands'])}")
