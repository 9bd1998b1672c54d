"""The systemd unit (verified, hardened, its capability set sufficient) and SIGHUP reloads."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conftest
from auditd_lite.manpage import render
from conftest import REPO, log_events as events

UNIT = REPO / "auditd-lite.service"
MAX_EXPOSURE = 3.0
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    """Every Key=value of a unit file, in order; a key may repeat."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_caps() -> list[str]:
    return directives(UNIT.read_text())["CapabilityBoundingSet"][-1].split()


@pytest.fixture
def verifiable_unit(tmp_path):
    """The unit, with ExecStart pointed at an existing auditd-lite when the package is not
    installed, and MANPATH holding the generated page, so `verify` can check both."""
    text = UNIT.read_text()
    if not Path("/usr/bin/auditd-lite").exists():
        exe = Path(sys.executable).parent / "auditd-lite"
        assert exe.exists(), "the test venv has no auditd-lite script"
        text = text.replace("ExecStart=/usr/bin/auditd-lite ", f"ExecStart={exe} ")
    unit = tmp_path / "auditd-lite.service"
    unit.write_text(text)
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    (man1 / "auditd-lite.1").write_text(render())
    return unit, {**os.environ, "MANPATH": f"{tmp_path / 'man'}:"}


class TestUnitFile:
    def test_notify_watchdog_restart(self):
        """Type=notify with a watchdog, reload by SIGHUP, restart on failure within a start limit."""
        d = directives(UNIT.read_text())
        assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
        assert d["ExecStart"] == ["/usr/bin/auditd-lite run"]
        assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert 10 <= int(d["WatchdogSec"][0]) <= 300
        assert d["Restart"] == ["on-failure"]
        assert int(d["StartLimitBurst"][0]) > 1 and int(d["StartLimitIntervalSec"][0]) > 0

    def test_hardening_directives(self):
        """The hardening the issue names is present, and each capability is explained."""
        text = UNIT.read_text()
        d = directives(text)
        for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                           "StateDirectory": "auditd-lite", "StateDirectoryMode": "0750",
                           "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateNetwork": "yes",
                           "RestrictAddressFamilies": "AF_UNIX"}.items():
            assert d.get(key) == [value], key
        assert set(unit_caps()) == {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}
        comments = "\n".join(l for l in text.splitlines() if l.startswith("#"))
        for cap in unit_caps():
            assert re.search(rf"#\s+{cap}\s+\S", comments), f"{cap} has no reason in the unit"

    @needs_analyze
    def test_verify_is_clean(self, verifiable_unit):
        """systemd-analyze verify reports nothing at all on the unit."""
        unit, env = verifiable_unit
        p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True, env=env)
        assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", p.stderr

    @needs_analyze
    def test_security_exposure(self, verifiable_unit):
        """systemd-analyze security --offline=true rates the unit at 3.0 or lower."""
        unit, env = verifiable_unit
        p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                           capture_output=True, text=True, env=env)
        m = re.search(r"Overall exposure level for auditd-lite\.service: (\d+\.\d+)", p.stdout)
        assert m, p.stdout[-2000:] + p.stderr
        assert float(m.group(1)) <= MAX_EXPOSURE, p.stdout


# run the daemon the way the unit does, as far as can be without systemd:
# root with only the unit's capabilities, no new privileges, no network, and
# no writable+executable memory (MemoryDenyWriteExecute=, via PR_SET_MDWE)
MDWE_THEN_CLI = (
    "import ctypes, runpy, sys; "
    "ctypes.CDLL(None).prctl(65, 1, 0, 0, 0); "  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    "sys.argv[0] = 'auditd-lite'; runpy.run_module('auditd_lite.cli', run_name='__main__')"
)


@pytest.mark.kernel
class TestSandboxed:
    def test_capture_with_the_unit_capabilities_only(self, daemon_factory, monkeypatch):
        """With only the unit's capabilities (no network, no W+X memory) capture and seeding work."""
        bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in unit_caps())
        prefix = ["unshare", "--net", "setpriv", "--no-new-privs", "--bounding-set", bounding,
                  "--inh-caps", "-all", sys.executable, "-c", MDWE_THEN_CLI]
        monkeypatch.setattr(conftest, "CLI", prefix)
        d = daemon_factory()
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        # the daemon really runs confined (pid is setpriv's after exec: the same process)
        assert "NoNewPrivs:\t1" in status
        numbers = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19, "CAP_PERFMON": 38, "CAP_BPF": 39}
        assert int(re.search(r"CapBnd:\s+(\w+)", status).group(1), 16) == sum(
            1 << numbers[c] for c in unit_caps())
        p = subprocess.Popen(["sh", "-c", "exit 3"])
        assert p.wait() == 3
        d.stop()
        exits = [r for r in conftest.query_json(d.db_dir, "--pid", p.pid, "--event", "exit")]
        assert [r["exit_code"] for r in exits] == [3]
        # seeding read our own executable from /proc (needs CAP_SYS_PTRACE: we
        # hold capabilities the daemon does not)
        con = sqlite3.connect(d.db_dir / "audit.db")
        row = con.execute("SELECT filename FROM seen_processes WHERE pid = ?", (os.getpid(),)).fetchone()
        con.close()
        assert row is not None and row[0] == os.path.realpath(f"/proc/{os.getpid()}/exe")


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class FakeBatchWriter:
    rotation = None


class TestApplyReload:
    def test_live_keys_applied_others_kept(self):
        """Rotation keys reach the writer, log_level is applied, capture keys stay as they were."""
        from auditd_lite.config import RunSettings
        from auditd_lite.daemon.main import apply_reload

        current = RunSettings(buffer_kb=8192, log_level="info")
        new = RunSettings(buffer_kb=64, log_level="warning", keep=3, rotate_interval="1h")
        bw = FakeBatchWriter()
        try:
            now = apply_reload(new, current=current, batch_writer=bw)
        finally:
            from auditd_lite.daemon import logsetup
            logsetup.configure("info")
        assert (now.log_level, now.keep, now.rotate_interval) == ("warning", 3, "1h")
        assert now.buffer_kb == 8192  # needs a reload of the programs: not applied
        assert bw.rotation.keep == 3 and bw.rotation.interval_s == 3600

    def test_nothing_changed(self):
        """Reloading an unchanged file touches neither the writer nor the settings."""
        from auditd_lite.config import RunSettings
        from auditd_lite.daemon.main import apply_reload

        bw = FakeBatchWriter()
        s = RunSettings()
        assert apply_reload(RunSettings(), current=s, batch_writer=bw) == s
        assert bw.rotation is None


@pytest.mark.kernel
class TestReload:
    def test_sighup_applies_live_keys_and_names_the_rest(self, daemon_factory, tmp_path, marker):
        """SIGHUP applies log_level and rotation keys, names batch_ms as needing a restart,
        and a broken file afterwards leaves the daemon running on the old settings."""
        cfg = tmp_path / "auditd-lite.toml"
        cfg.write_text('log_level = "info"\n')
        d = daemon_factory("--config", cfg)
        cfg.write_text('log_level = "debug"\nkeep = 3\nbatch_ms = 100\n')
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: events(d.log, "config_reloaded")), d.log[-2000:]
        reloaded = events(d.log, "config_reloaded")[0]
        assert set(reloaded["applied"]) == {"log_level", "keep"}
        assert reloaded["needs_restart"] == ["batch_ms"]
        assert events(d.log, "reload_needs_restart")[0]["keys"] == ["batch_ms"]
        # debug is now on: a batch of our process's records is logged at debug level
        subprocess.run([str(marker)], check=True)
        assert wait_for(lambda: events(d.log, "batch_written")), d.log[-2000:]
        cfg.write_text("log_level = 42\n")
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: events(d.log, "reload_failed")), d.log[-2000:]
        assert "log_level" in events(d.log, "reload_failed")[0]["error"]
        assert d.proc.poll() is None
        d.stop()
