"""The Debian package: its default config, then build it, install it with apt, capture with
the installed program, purge it.

The package tests run as root in CI (kernel marker). Everything there is
checked through the installed files and Debian's tools, not this checkout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from auditd_lite import config
from conftest import HEADER, REPO, build_deb

PKG = "auditd-lite"
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


def installed() -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PKG], capture_output=True, text=True)
    return "install ok installed" in p.stdout


def sh(*cmd, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env or CLEAN_ENV,
                       cwd="/", timeout=timeout, **kw)
    assert p.returncode == 0, (cmd, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package built from this checkout by packaging/build-deb.sh."""
    return build_deb()


@pytest.fixture(scope="module")
def installed_pkg(deb):
    """The package installed with apt-get; purged again afterwards."""
    if installed():
        pytest.skip("auditd-lite is already installed on this machine; not touching it")
    state_existed = STATE.exists()
    p = subprocess.run(["apt-get", "install", "-y", "-q", f"./{deb.relative_to(REPO)}"],
                       capture_output=True, text=True, env=APT_ENV, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    try:
        yield deb
    finally:
        if installed():
            subprocess.run(["apt-get", "purge", "-y", "-q", PKG], capture_output=True, env=APT_ENV,
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
    def test_control_fields(self, deb):
        """Depends on Debian's python3 and bcc, recommends the arch's kernel headers."""
        fields = sh("dpkg-deb", "-f", deb, "Depends", "Recommends", "Architecture").stdout
        assert "python3 (>= 3.11)" in fields and "python3-bpfcc" in fields
        arch = sh("dpkg", "--print-architecture").stdout.strip()
        assert f"Recommends: linux-headers-{arch}" in fields

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

    def test_installed_hunt_evaluates_every_bundled_rule(self, installed_pkg):
        """The installed program (its vendored pySigma, Debian's PyYAML and pyparsing) loads the
        bundled SigmaHQ rules and evaluates every one of them."""
        out = sh(BIN, "hunt", "--list").stdout.splitlines()
        assert out[-1] == "144 rules loaded, 144 evaluated, 0 not; 0 files did not parse"
        assert len(out) == 145

    def test_doctor(self, installed_pkg):
        """The installed `auditd-lite doctor` says capture can work and exits 0."""
        p = sh(BIN, "doctor")
        assert p.stdout.strip().splitlines()[-1] == "capture can work on this host"
        assert "Traceback" not in p.stderr

    def test_capture_with_installed_program(self, installed_pkg, tmp_path):
        """The installed daemon records `sh -c 'exit 3'` with exit code 3, read back by its query."""
        db = tmp_path / "db"
        daemon = subprocess.Popen([str(BIN), "run", "--print", "--db-dir", str(db)], cwd="/",
                                  env=CLEAN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                line = daemon.stdout.readline().decode()
                if not line or line.rstrip("\n") == HEADER:
                    break
            assert line.rstrip("\n") == HEADER, daemon.stderr.read1(8192).decode() if line == "" else line
            child = subprocess.Popen(["sh", "-c", "exit 3"])
            assert child.wait() == 3
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=60)
            assert daemon.returncode == 0, err.decode()[-3000:]
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        out = sh(BIN, "query", "--db-dir", db, "--pid", child.pid, "--format", "json").stdout
        records = [json.loads(line) for line in out.splitlines()]
        exits = [r for r in records if r["event"] == "exit"]
        assert len(exits) == 1 and exits[0]["exit_code"] == 3 and exits[0]["signal"] == 0

    def test_purge_keeps_evidence(self, installed_pkg):
        """apt-get purge removes program, unit and config, and leaves /var/lib/auditd-lite."""
        marker = STATE / "evidence-test.db"
        marker.write_bytes(b"")
        try:
            sh("apt-get", "purge", "-y", "-q", PKG, env=APT_ENV)
            assert not installed()
            for gone in (BIN, UNIT, HUNT_UNIT, CONF, CONF.parent, MAN, Path("/usr/lib/auditd-lite"), WANTS):
                assert not os.path.lexists(gone), gone
            assert marker.exists()
        finally:
            marker.unlink(missing_ok=True)
