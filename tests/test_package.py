"""The Debian packages of this machine's release: the default config, then build them, install
them with apt, run every command they ship from the installed files (tests/pkgsmoke.py), purge.

The package tests run as root in CI (kernel marker). Everything there is
checked through the installed files and Debian's tools, not this checkout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from auditd_lite import config
import pkgsmoke
from conftest import REPO, build_debs

PKG = "auditd-lite"
LAKE = "auditd-lite-lake"
BIN = Path("/usr/bin/auditd-lite")
UNIT = Path("/lib/systemd/system/auditd-lite.service")
HUNT_UNIT = Path("/lib/systemd/system/auditd-lite-hunt.service")
CONF = Path("/etc/auditd-lite/auditd-lite.toml")
STATE = Path("/var/lib/auditd-lite")
MAN = Path("/usr/share/man/man1/auditd-lite.1.gz")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/auditd-lite.service")
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
# the installed program must not see this checkout or the test venv
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def installed(pkg: str = PKG) -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return "install ok installed" in p.stdout


def sh(*cmd, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env or CLEAN_ENV,
                       cwd="/", timeout=timeout, **kw)
    assert p.returncode == 0, (cmd, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p


@pytest.fixture(scope="module")
def debs() -> dict[str, Path]:
    """The packages built from this checkout by packaging/build-deb.sh for this release."""
    return build_debs()


@pytest.fixture(scope="module")
def deb(debs) -> Path:
    return debs[PKG]


@pytest.fixture(scope="module")
def installed_pkg(debs):
    """Both packages installed with apt-get; purged again afterwards."""
    if installed() or installed(LAKE):
        pytest.skip("auditd-lite is already installed on this machine; not touching it")
    state_existed = STATE.exists()
    p = subprocess.run(["apt-get", "install", "-y", "-q", *(f"./{d.relative_to(REPO)}" for d in debs.values())],
                       capture_output=True, text=True, env=APT_ENV, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    try:
        yield debs[PKG]
    finally:
        if installed() or installed(LAKE):
            subprocess.run(["apt-get", "purge", "-y", "-q", PKG, LAKE], capture_output=True, env=APT_ENV,
                           timeout=300)
        if not state_existed and STATE.exists() and not any(STATE.iterdir()):
            STATE.rmdir()


class TestShippedConfig:
    SHIPPED = REPO / "packaging" / "auditd-lite.toml"

    def test_loads_and_validates(self):
        """The shipped file loads with the daemon's own loader and gives valid settings."""
        values = config.load_file(self.SHIPPED, required=True)
        config.RunSettings(**values).validate(str(self.SHIPPED))

    def test_every_setting_is_documented(self):
        """Every RunSettings field appears as a key line, set or commented out."""
        text = self.SHIPPED.read_text()
        keys = set(re.findall(r"^#?([a-z_]+) = ", text, flags=re.M))
        fields = {f.name for f in dataclasses.fields(config.RunSettings)}
        assert fields - keys == set()
        assert keys - fields == set()  # no commented key the loader would reject

    def test_commented_values_are_the_defaults(self):
        """Uncommenting a line changes nothing: each commented value is the built-in default."""
        defaults = config.RunSettings()
        for key, value in re.findall(r"^#([a-z_]+) = (.+)$", self.SHIPPED.read_text(), flags=re.M):
            parsed = tomllib.loads(f"{key} = {value}")[key]
            want = getattr(defaults, key)
            assert parsed == (str(want) if isinstance(want, Path) else want), key


@pytest.mark.kernel
class TestPackage:
    def test_control_fields(self, debs):
        """auditd-lite depends on Debian's python3 of this release, its minor version alone (it
        vendors PyYAML built for it, pySigma's), and bcc, recommends the arch's kernel headers
        and the lake; auditd-lite-lake (pyarrow, compiled for this Python) depends on exactly
        this auditd-lite and this Python's minor version."""
        fields = sh("dpkg-deb", "-f", debs[PKG], "Version", "Depends", "Recommends").stdout
        version = fields.splitlines()[0].split(": ")[1]
        assert version.endswith("+deb12") and "python3-bpfcc" in fields
        assert "Depends: python3 (>= 3.11~), python3 (<< 3.12), " in fields
        arch = sh("dpkg", "--print-architecture").stdout.strip()
        assert f"Recommends: linux-headers-{arch}, {LAKE} (= {version})" in fields
        lake = sh("dpkg-deb", "-f", debs[LAKE], "Depends").stdout
        assert lake.strip() == f"{PKG} (= {version}), python3 (>= 3.11~), python3 (<< 3.12)"

    def test_installed_layout(self, installed_pkg):
        """Wrapper, unit, conffile, man page and a 0750 state directory; the unit is enabled."""
        assert BIN.is_file() and os.access(BIN, os.X_OK)
        assert BIN.read_text().startswith("#!/usr/bin/python3")
        assert UNIT.is_file() and MAN.is_file()
        conffiles = sh("dpkg-query", "-W", "-f=${Conffiles}", PKG).stdout
        assert str(CONF) in conffiles
        assert stat.S_IMODE(STATE.stat().st_mode) == 0o750
        assert WANTS.is_symlink() and WANTS.resolve() == UNIT.resolve()
        assert HUNT_UNIT.is_file() and not (WANTS.parent / HUNT_UNIT.name).exists()  # installed disabled
        # the vendored SQLAlchemy is 2.x even though Debian 12 ships 1.4
        code = ("import sys; sys.path.insert(0, '/usr/lib/auditd-lite'); "
                "import sqlalchemy; print(sqlalchemy.__version__)")
        assert sh("/usr/bin/python3", "-I", "-c", code).stdout.startswith("2.")

    @pytest.mark.parametrize("unit", [UNIT, HUNT_UNIT], ids=lambda u: u.name)
    def test_installed_unit_verifies(self, installed_pkg, unit):
        """systemd-analyze verify is clean on each installed unit (binary and man page resolve)."""
        if shutil.which("systemd-analyze") is None:
            pytest.skip("systemd-analyze is not installed")
        p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert p.returncode == 0 and p.stderr.strip() == "", p.stderr

    def test_every_command(self, installed_pkg, tmp_path):
        """Every command the installed CLI ships (read from its parsers) runs from the installed
        files: doctor all ok, `run` records `sh -c 'exit 3'` with exit code 3, query, tree, sql,
        stats, db, verify, export in every format (Parquet read back by the installed pyarrow),
        keygen, a signed export verified, seal setup and status (tests/pkgsmoke.py)."""
        report = pkgsmoke.Smoke(tmp_path).run_all()
        print(json.dumps(report, indent=1))
        assert report["python"].startswith("3.11.") and report["lake"] is True
        assert set(report["commands"]) == set(pkgsmoke.Smoke(tmp_path / "again").commands)

    def test_installed_hunt_evaluates_every_bundled_rule(self, installed_pkg):
        """The installed program (its vendored pySigma, PyYAML and pyparsing) loads the bundled
        SigmaHQ rules and evaluates every one of them."""
        out = sh(BIN, "hunt", "--list").stdout.splitlines()
        assert out[-1] == "144 rules loaded, 144 evaluated, 0 not; 0 files did not parse"
        assert len(out) == 145

    def test_purge_keeps_evidence(self, installed_pkg):
        """apt-get purge auditd-lite removes program, lake, unit and config, and leaves
        /var/lib/auditd-lite."""
        marker = STATE / "evidence-test.db"
        marker.write_bytes(b"")
        try:
            sh("apt-get", "purge", "-y", "-q", PKG, env=APT_ENV)
            # the lake depends on it: apt purges both
            assert not installed() and not installed(LAKE)
            for gone in (BIN, UNIT, HUNT_UNIT, CONF, CONF.parent, MAN, Path("/usr/lib/auditd-lite"), WANTS):
                assert not os.path.lexists(gone), gone
            assert marker.exists()
        finally:
            marker.unlink(missing_ok=True)
