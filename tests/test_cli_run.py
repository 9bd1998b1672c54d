"""`auditd-lite run` when capture cannot work: one sentence, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, run_cli


class TestCannotCapture:
    @pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
    def test_not_root(self, tmp_path):
        """Run as an unprivileged user says it needs root, exit 2."""
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "auditd_lite.cli", "run", "--db-dir", str(tmp_path)],
                           capture_output=True, cwd=REPO)
        assert p.returncode == 2, p.stderr
        err = p.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "needs root" in err

    def test_bcc_missing(self, tmp_path):
        """Without Debian's bcc module on the path: names python3-bpfcc, exit 2."""
        code = ("import sys; sys.path = [p for p in sys.path if 'dist-packages' not in p]; "
                "import os; os.geteuid = lambda: 0; "
                "from auditd_lite.cli import main; "
                f"sys.exit(main(['run', '--db-dir', {str(tmp_path / 'db')!r}]))")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
        err = p.stderr.decode().strip().splitlines()
        assert p.returncode == 2, p.stderr
        assert "python3-bpfcc" in err[-1]
        assert "Traceback" not in p.stderr.decode()


class TestBadFlags:
    @pytest.mark.parametrize("flags,needle", [
        (["--buffer-kb", "x"], "--buffer-kb"),
        (["--min-duration-ms", "-5"], "--min-duration-ms"),
        (["--transport", "pigeon"], "--transport"),
        (["--max-arg-bytes", "100"], "max_arg_bytes"),
        (["--config", "/nonexistent.toml"], "config file not found"),
    ])
    def test_bad_run_flags(self, flags, needle, tmp_path):
        """A bad run flag is one line naming it, exit 2, before anything is loaded."""
        p = run_cli("run", "--db-dir", tmp_path, *flags)
        assert p.returncode == 2
        err = p.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    def test_bad_config_key(self, tmp_path):
        """An unknown key in the config file is named with the file, exit 2."""
        cfg = tmp_path / "c.toml"
        cfg.write_text("buffer_kb = 64\nfrobnicate = 1\n")
        p = run_cli("run", "--config", cfg, "--db-dir", tmp_path)
        assert p.returncode == 2
        assert "frobnicate" in p.stderr.decode() and str(cfg) in p.stderr.decode()

    def test_bad_config_type(self, tmp_path):
        """A config value of the wrong type is named, exit 2."""
        cfg = tmp_path / "c.toml"
        cfg.write_text('buffer_kb = "big"\n')
        p = run_cli("run", "--config", cfg, "--db-dir", tmp_path)
        assert p.returncode == 2 and "buffer_kb" in p.stderr.decode()
