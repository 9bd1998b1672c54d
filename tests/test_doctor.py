"""`auditd-lite doctor`: each check against fake host files, and the real command on this host."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from auditd_lite import doctor, loader
from auditd_lite.doctor import FAIL, OK, SKIP, WARN, Host
from conftest import REPO, run_cli

ALL_CAPS = "000001ffffffffff"


def fake_host(tmp_path, release="6.18.2-test", caps=ALL_CAPS, tracepoints=loader.TRACEPOINTS,
              headers_for="6.18.2-test", btf=True, euid=0) -> Host:
    """A host made of files under tmp_path: /proc status, tracefs, module tree, BTF."""
    status = tmp_path / "status"
    status.write_text(f"Name:\tx\nCapEff:\t{caps}\n")
    tracefs = tmp_path / "tracing"
    for tp in tracepoints or ():
        d = tracefs / "events" / tp.split(":")[0] / tp.split(":")[1]
        d.mkdir(parents=True)
        (d / "id").write_text("1\n")
    if tracepoints is not None:
        (tracefs / "events").mkdir(parents=True, exist_ok=True)
    modules = tmp_path / "modules"
    if headers_for:
        build = modules / release / "build"
        (build / "include" / "config").mkdir(parents=True)
        (build / "include" / "config" / "kernel.release").write_text(headers_for + "\n")
    btf_path = tmp_path / "vmlinux"
    if btf:
        btf_path.write_bytes(b"not really BTF")
    return Host(release=release, proc_status=str(status), btf_path=str(btf_path),
                tracefs=(str(tracefs),), modules=str(modules), kheaders=str(tmp_path / "nokh"),
                euid=euid)


class TestChecks:
    def test_tracefs_not_mounted(self, tmp_path):
        """No tracefs: FAIL with the mount command as the fix, and the tracepoint check skipped."""
        host = fake_host(tmp_path, tracepoints=None)
        r = doctor.check_tracefs(host)
        assert r.status == FAIL and r.fix == "mount -t tracefs tracefs /sys/kernel/tracing"
        assert "-> fix: mount -t tracefs tracefs /sys/kernel/tracing" in r.line()
        assert doctor.check_tracepoints(host).status == SKIP

    def test_missing_tracepoint_is_named(self, tmp_path):
        """A kernel without the execveat exit tracepoint fails, naming exactly that one."""
        host = fake_host(tmp_path, tracepoints=[t for t in loader.TRACEPOINTS
                                                if t != "syscalls:sys_exit_execveat"])
        r = doctor.check_tracepoints(host)
        assert r.status == FAIL and r.message == "missing: syscalls:sys_exit_execveat"

    def test_all_six_tracepoints(self, tmp_path):
        """With all six tracepoints present the check passes and lists them."""
        r = doctor.check_tracepoints(fake_host(tmp_path))
        assert r.status == OK and all(tp in r.message for tp in loader.TRACEPOINTS)
        assert len(loader.TRACEPOINTS) == 6

    def test_headers_for_another_kernel_are_fine_with_btf(self, tmp_path):
        """Headers made for another kernel: OK, saying the offsets come from BTF."""
        r = doctor.check_headers(fake_host(tmp_path, headers_for="6.1.0-56-amd64"))
        assert r.status == OK
        assert "made for 6.1.0-56-amd64, not the running 6.18.2-test" in r.message
        assert "field offsets come from BTF" in r.message

    def test_headers_for_another_kernel_without_btf_warn(self, tmp_path):
        """Mismatched headers and no BTF: a warning that recorded fields may be wrong."""
        r = doctor.check_headers(fake_host(tmp_path, headers_for="6.1.0-56-amd64", btf=False))
        assert r.status == WARN and "may be wrong" in r.message

    def test_matching_headers(self, tmp_path):
        """Headers made for the running kernel are reported as such."""
        r = doctor.check_headers(fake_host(tmp_path))
        assert r.status == OK and "made for the running kernel" in r.message

    def test_no_headers(self, tmp_path):
        """No headers at all: FAIL, with the package to install."""
        r = doctor.check_headers(fake_host(tmp_path, headers_for=None))
        assert r.status == FAIL and "apt-get install linux-headers-6.18.2-test" in r.fix

    @pytest.mark.parametrize("release,status", [
        ("6.18.44-fc-v657", OK), ("5.8.0", OK), ("5.7.19", WARN), ("5.4.0-150-generic", FAIL)])
    def test_kernel_version(self, tmp_path, release, status):
        """5.8+ is fine, 5.5 to 5.7 needs perfbuf, older cannot run the program."""
        r = doctor.check_kernel(fake_host(tmp_path, release=release))
        assert r.status == status
        if status == WARN:
            assert "perfbuf" in r.fix

    def test_root_without_bpf_caps(self, tmp_path):
        """Root whose capabilities lack CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN fails, naming them."""
        caps = f"{(1 << 19):016x}"  # CAP_SYS_PTRACE only
        r = doctor.check_privileges(fake_host(tmp_path, caps=caps))
        assert r.status == FAIL and "CAP_BPF, CAP_PERFMON" in r.message

    def test_without_ptrace_is_a_warning(self, tmp_path):
        """CAP_BPF and CAP_PERFMON without CAP_SYS_PTRACE: capture works, seeding is poorer."""
        caps = f"{(1 << 38) | (1 << 39):016x}"
        r = doctor.check_privileges(fake_host(tmp_path, caps=caps))
        assert r.status == WARN and "CAP_SYS_PTRACE" in r.fix

    def test_not_root(self, tmp_path):
        """A non-root user fails the privileges check with the way to run it."""
        r = doctor.check_privileges(fake_host(tmp_path, euid=1000))
        assert r.status == FAIL and "uid 1000" in r.message and "sudo" in r.fix

    def test_database_dir(self, tmp_path):
        """A writable directory passes with its free space; a path under a file fails."""
        ok = doctor.check_db_dir(tmp_path / "db")
        assert ok.status == OK and "MiB free" in ok.message and "will be created" in ok.message
        (tmp_path / "afile").write_text("")
        bad = doctor.check_db_dir(tmp_path / "afile" / "db")
        assert bad.status == FAIL and "not a directory" in bad.message

    def test_unusable_btf_is_a_warning(self, tmp_path):
        """A BTF file that does not parse is a warning about header layouts, not a crash."""
        r = doctor.check_btf(fake_host(tmp_path))
        assert r.status == WARN and "CONFIG_DEBUG_INFO_BTF" in r.fix


class TestMain:
    def test_crashing_check_is_one_failed_line(self, tmp_path, monkeypatch):
        """A check that raises becomes a FAIL line naming it; the other checks still run."""
        def boom(host):
            raise RuntimeError("kaboom")

        monkeypatch.setattr(doctor, "check_kernel", boom)
        results = doctor.run_checks(tmp_path, compile_test=False, host=fake_host(tmp_path))
        kernel = next(r for r in results if r.name == "kernel")
        assert kernel.status == FAIL and "kaboom" in kernel.message
        assert [r.name for r in results][-1] == "database"

    def test_exit_status_follows_failures(self, tmp_path, monkeypatch):
        """Exit 0 and 'capture can work' when nothing fails; 1 naming the failed checks otherwise."""
        monkeypatch.setattr(doctor, "check_btf", lambda host: doctor.Result(OK, "btf", "fake"))
        monkeypatch.setattr(doctor, "check_bcc", lambda host: doctor.Result(OK, "bcc", "fake"))
        out = io.StringIO()
        assert doctor.main(tmp_path, compile_test=False, out=out, host=fake_host(tmp_path)) == 0
        assert out.getvalue().splitlines()[-1] == "capture can work on this host"
        out = io.StringIO()
        (tmp_path / "b").mkdir()
        host = fake_host(tmp_path / "b", tracepoints=None)
        assert doctor.main(tmp_path, compile_test=False, out=out, host=host) == 1
        assert out.getvalue().splitlines()[-1] == \
            "capture cannot work here: 1 check(s) failed (tracefs)"

    def test_bcc_missing_no_traceback(self, tmp_path):
        """Without Debian's bcc on the path: a FAIL line naming python3-bpfcc, exit 1, no traceback."""
        code = ("import sys; sys.path = [p for p in sys.path if 'dist-packages' not in p]; "
                "from auditd_lite.cli import main; "
                f"sys.exit(main(['doctor', '--db-dir', {str(tmp_path)!r}]))")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "Traceback" not in p.stderr and p.stderr == ""
        bcc_line = next(l for l in p.stdout.splitlines() if l.split()[1] == "bcc")
        assert bcc_line.startswith("FAIL") and "python3-bpfcc" in bcc_line
        compile_line = next(l for l in p.stdout.splitlines() if l.split()[1] == "compile")
        assert compile_line.startswith("skip")


@pytest.mark.kernel
class TestOnThisHost:
    def test_doctor_passes(self, tmp_path):
        """On a host that captures, doctor exits 0 with every check ok, compile included."""
        p = run_cli("doctor", "--db-dir", tmp_path / "db", check=0)
        lines = p.stdout.decode().splitlines()
        assert lines[-1] == "capture can work on this host"
        names = [l.split()[1] for l in lines[:-1]]
        assert names == ["privileges", "kernel", "btf", "tracefs", "tracepoints", "bcc",
                         "headers", "compile", "ringbuf", "database"]
        headers = next(l for l in lines if l.split()[1] == "headers")
        assert "made for the running kernel" in headers or "field offsets come from BTF" in headers

    def test_doctor_as_nobody_fails(self, tmp_path):
        """As an unprivileged user doctor exits 1 and says to run it as root."""
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "auditd_lite.cli", "doctor", "--db-dir", "/tmp"],
                           capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stdout.splitlines()[0].startswith("FAIL  privileges   running as uid 65534")
        assert "Traceback" not in p.stderr
