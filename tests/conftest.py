"""Shared fixtures: the real daemon for kernel tests, and the rule that in CI
(AUDITD_LITE_REQUIRE_BPF=1) a kernel test that cannot run fails instead of
skipping, so a broken loader never passes as "skipped"."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "auditd_lite.cli"]
REQUIRE_BPF = os.environ.get("AUDITD_LITE_REQUIRE_BPF") == "1"
# Set inside the VM tier's guests (tests/vm): the capture tests then read the
# database of the running auditd-lite.service instead of starting a daemon.
SERVICE_DB = os.environ.get("AUDITD_LITE_SERVICE_DB")
HEADER = "TIME     EVENT COMM             PID     PPID    FILENAME/EXIT CODE"


# the guest side of the VM tier runs only inside a guest (tests/vm/guest.sh)
collect_ignore = [] if SERVICE_DB else ["vm/guest"]


def pytest_runtest_logreport(report):
    """In a VM guest: each phase of each test, as it ends, with its seconds, in the results
    share (durations.txt), and each failure's report (failures.txt), so a guest that times out
    still shows where its time went and why a test failed."""
    results = os.environ.get("VMTEST_RESULTS")
    if SERVICE_DB and results:
        with open(os.path.join(results, "durations.txt"), "a") as f:
            f.write(f"{report.duration:8.1f} {report.when:8} {report.outcome:7} {report.nodeid}\n")
        if report.failed:
            with open(os.path.join(results, "failures.txt"), "a") as f:
                f.write(f"==== {report.when} {report.nodeid}\n{report.longreprtext}\n")


# the packages of a release and the roots of other releases (tests/vm/roots.py)
sys.path.insert(0, str(REPO / "tests" / "vm"))
import roots  # noqa: E402

_built: dict[str, dict[str, Path]] = {}
# the VM tier makes its guests' packages in a thread of its own while the host tests run
# (tests/vm/test_matrix.py, prepare_guests), beside tests that want the same packages: one
# build-deb.sh at a time, each release built once
_building = threading.Lock()


def build_debs(release: str | None = None) -> dict[str, Path]:
    """roots.build_debs (the packages of a release, built from this checkout), once per session."""
    key = release or ""
    if key not in _built:
        with _building:
            if key not in _built:
                try:
                    _built[key] = roots.build_debs(release)
                except roots.RootError as e:
                    pytest.fail(str(e), pytrace=False)
    assert set(_built[key]) == {"auditd-lite", "auditd-lite-lake"}, _built[key]
    return _built[key]


# tests/programs/gate32.c (tests/test_gate.py), built before the VM guests boot: a guest's root
# (Debian 13's) may have no compiler, and the guest sees the checkout
GATE32_SOURCE = REPO / "tests/programs/gate32.c"
GATE32_BUILT = REPO / "build/gate32"
# no libc, one source for both: the i386 build needs no 32-bit libc on the machine
GATE32_CFLAGS = {"x64": [], "i386": ["-m32", "-fno-pic"]}


def build_gate32(out: Path = GATE32_BUILT) -> dict[str, Path]:
    """gate32.c built as a 64-bit program and as an i386 one (a real 32-bit binary) into out."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)
    built = {}
    for name, extra in GATE32_CFLAGS.items():
        path = out / f"gate32-{name}"
        p = subprocess.run(["gcc", "-O1", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector",
                            *extra, "-o", str(path), str(GATE32_SOURCE)], capture_output=True, text=True)
        assert p.returncode == 0, f"gcc could not build the {name} gate32: {p.stderr[-2000:]}"
        built[name] = path
    return built


def count_collected(args: list[str]) -> int:
    """How many tests pytest collects from ``args`` as a VM guest would (guest tests included)."""
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        *args], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "AUDITD_LITE_SERVICE_DB": "/nonexistent"})
    return sum(1 for line in p.stdout.splitlines() if "::" in line)


# timings of each VM guest (tests/vm/test_matrix.py), printed at the end of the run
VM_SUMMARY: list[dict] = []
# a line per release root tier run (tests/vm/test_userland.py), printed at the end of the run
TIER_SUMMARY: list[str] = []


def pytest_collection_finish(session):
    """A run that includes the VM tier begins making what its guests boot from (packages,
    kernels, other releases' roots: minutes, mostly downloads and dpkg) at once, beside the
    host tests, rather than when the tier's first test comes: tests/vm/test_matrix.py,
    prepare_guests. The guests themselves boot only then (a TCG guest beside the host tests
    would slow both)."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        prepare = getattr(getattr(item, "module", None), "prepare_guests", None)
        if prepare is not None:
            prepare()
            return


def pytest_terminal_summary(terminalreporter):
    for line in TIER_SUMMARY:
        terminalreporter.write_line(line)
    for t in VM_SUMMARY:
        terminalreporter.write_line(
            "vm {kernel} ({abi}, {accel}): boot {boot_s}, install {install_s}, tests {tests_s}, "
            "whole guest {total_s} s".format(**{"install_s": "?", "tests_s": "?", **t}))


def kernel_unavailable() -> str | None:
    """Why real capture cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc (python3-bpfcc) not importable"
    return None


def pytest_collection_modifyitems(config, items):
    reason = kernel_unavailable()
    if reason is None or REQUIRE_BPF:
        return
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if REQUIRE_BPF and "kernel" in item.keywords:
        reason = kernel_unavailable()
        if reason is not None:
            pytest.fail(f"kernel test cannot run: {reason} (AUDITD_LITE_REQUIRE_BPF=1)")


def run_cli(*args, check=None, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, cwd=REPO, **kw)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return p


def cli_in_process(*argv) -> tuple[int, str, str]:
    """``auditd-lite ARGV`` run in this process (cli.main): (exit status, stdout, stderr).

    Faster than run_cli's subprocess, and a monkeypatched module is the one the command uses.
    """
    import contextlib
    import io

    from auditd_lite import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # --help and --version exit through argparse
            status = exc.code if isinstance(exc.code, int) else 0
    return status, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` (mount's size=, e.g. 64m) mounted at path, made here: a disk that
    really fills. Unmounted (lazily: a daemon may still hold a file) on the way out."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def query_json(db_dir, *filters) -> list[dict]:
    """`query --format json` over db_dir, as rows. In this process (cli_in_process): a
    subprocess costs an interpreter and SQLAlchemy's import each time, seconds under TCG, where
    a flush polls it; the command-line path itself is tested by test_help and test_cli_fuzz."""
    status, out, err = cli_in_process("query", "--db-dir", db_dir, "--format", "json", *filters)
    assert status in (0, 1), err
    assert "Traceback" not in err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class Daemon:
    """The real `auditd-lite run` in a subprocess, with its own database directory."""

    def __init__(self, db_dir: Path, log_path: Path, *flags):
        self.db_dir = db_dir
        self.log_path = log_path
        self.flags = [str(f) for f in flags]
        self.proc: subprocess.Popen | None = None
        self.printed: list[str] = []

    def start(self, timeout: float = 90.0) -> "Daemon":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*CLI, "run", "--print", "--db-dir", str(self.db_dir), *self.flags],
            stdout=subprocess.PIPE, stderr=self._log, cwd=REPO)
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), True)
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if line.rstrip("\n") == HEADER:
                # keep reading what --print prints: a full pipe would block the writer
                self._reader = threading.Thread(target=self._drain, daemon=True)
                self._reader.start()
                return self
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"daemon never printed its header: {self.log_path.read_text()[-3000:]}")

    def _drain(self) -> None:
        for raw in self.proc.stdout:
            self.printed.append(raw.decode(errors="replace").rstrip("\n"))

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        self._log.close()
        assert self.proc.returncode == 0, (self.proc.returncode, self.log_path.read_text()[-3000:])
        return self.proc.returncode

    # every record of what ran before is written once the daemon has stopped
    flush = stop

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def mode(self) -> str:
        """The capture mode the daemon logged it attached in."""
        return log_events(self.log, "programs_attached")[-1]["capture_mode"]


class Service:
    """The running auditd-lite.service, as the capture tests see a daemon: a
    database directory, and a flush that returns once everything that ran
    before it is written. The service keeps running."""

    def __init__(self, db_dir: Path, mode: str | None = None):
        self.db_dir = db_dir
        # the capture mode it runs in: in a VM guest the service's is the one the guest expects
        self.mode = mode or os.environ.get("AUDITD_LITE_EXPECT_CAPTURE_MODE")

    def flush(self, timeout: float = 120.0) -> None:
        # Records reach the database in the order the ring buffer reserved
        # them, and the writer commits batches in order: once the exit of a
        # process started now is in the database, so is every earlier record.
        p = subprocess.Popen(["/bin/true", "auditd-lite-flush", uuid.uuid4().hex])
        p.wait()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if query_json(self.db_dir, "--pid", p.pid, "--event", "exit", "--since", "10m"):
                return
            time.sleep(0.2)
        raise AssertionError(f"the service wrote no exit for pid {p.pid} in {timeout:.0f} s")


@pytest.fixture
def daemon_factory(tmp_path):
    started: list[Daemon] = []

    def make(*flags) -> Daemon:
        n = len(started)
        d = Daemon(tmp_path / f"db{n}", tmp_path / f"daemon{n}.log", *flags)
        started.append(d)
        return d.start()

    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def capture(request, daemon_factory):
    """What records this test's processes: a daemon of its own with default
    settings, or in a VM guest the service; in a module that sets EACH_CAPTURE_MODE, once in
    each of CAPTURE_MODES. Call ``flush()`` before reading."""
    if getattr(request, "param", "default") == "raw_syscalls":
        return request.getfixturevalue("forced_fallback")
    if SERVICE_DB:
        return Service(Path(SERVICE_DB))
    return daemon_factory()


# The capture modes the tests of a module with EACH_CAPTURE_MODE = True run in: the default, and
# in a VM guest, where the service hooks execve with fentry, also the raw_syscalls fallback
# forced. On this host kind the default is the fallback already (tracing programs are refused).
CAPTURE_MODES = ["default"] + (["raw_syscalls"] if SERVICE_DB else [])


def pytest_generate_tests(metafunc):
    if "capture" in metafunc.fixturenames and getattr(metafunc.module, "EACH_CAPTURE_MODE", False):
        metafunc.parametrize("capture", CAPTURE_MODES, indirect=True)


@pytest.fixture(scope="session")
def forced_fallback(tmp_path_factory):
    """One daemon for the whole run with --capture-mode raw_syscalls, read as the service is (a
    flush waits for a marker's exit): starting one per test would cost a compile each, minutes
    under TCG. ``daemon`` is the Daemon, for what its descriptors and log say."""
    tmp = tmp_path_factory.mktemp("fallback")
    d = Daemon(tmp / "db", tmp / "daemon.log", "--capture-mode", "raw_syscalls").start()
    try:
        assert d.mode == "raw_syscalls", d.log
        service = Service(d.db_dir, d.mode)
        service.daemon = d
        yield service
    finally:
        d.stop()


@pytest.fixture
def marker(tmp_path):
    """A copy of /bin/true under a unique name: its comm and path identify our processes."""
    name = "m" + uuid.uuid4().hex[:10]
    path = tmp_path / name
    shutil.copy("/bin/true", path)
    path.chmod(0o755)
    tmp_path.chmod(0o755)
    return path


class Storm:
    """Two threads spawning a program as fast as they can, remembering each child:
    (pid, wall time just before spawn, wall time after it was reaped)."""

    def __init__(self, program, workers: int = 2):
        import threading

        self.program = str(program)
        self.children: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work) for _ in range(workers)]

    def _work(self):
        argv = [self.program]
        while not self._stop.is_set():
            t0 = time.time_ns()
            pid = os.posix_spawn(self.program, argv, {})
            os.waitpid(pid, 0)
            self.children.append((pid, t0, time.time_ns()))

    def __enter__(self) -> "Storm":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()

    def count(self) -> int:
        return len(self.children)


class InProcess:
    """The real programs loaded in this process (through the compiler child, as the daemon
    loads them), polled by a thread into ``raw`` as the daemon's collector does. On leaving
    the block: detached, drained, ``lost`` (the kernel's loss counter) and ``wrapped`` (ring
    buffer records read in two pieces) read, and closed."""

    def __init__(self, settings, poll_ms: int = 50):
        self.settings = settings
        self.poll_ms = poll_ms
        self.raw: list[bytes] = []
        self.lost = self.wrapped = None

    def __enter__(self) -> "InProcess":
        from auditd_lite.capture import loader  # noqa: PLC0415 - only the kernel tests load

        self.programs = loader.Programs(self.settings, self.raw)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll)
        self._poller.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.programs.poll(self.poll_ms)

    def __exit__(self, *exc) -> None:
        from auditd_lite.capture import records  # noqa: PLC0415

        self._stop.set()
        self._poller.join()
        p = self.programs
        try:
            p.detach()
            p.drain()
            self.lost = p.counters()[records.CNT_LOST]
            self.wrapped = getattr(p.buffer, "wrapped", None)
        finally:
            p.close()

    def decoded(self, max_args: int = 128) -> list[tuple]:
        from auditd_lite.capture import records  # noqa: PLC0415

        decoder = records.Decoder(max_args)
        return [decoder.decode(r) for r in list(self.raw)]


def log_events(log_text: str, name: str) -> list[dict]:
    """The daemon's JSON log lines with event == name."""
    out = []
    for line in log_text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == name:
            out.append(rec)
    return out


def fill_disk(path: Path) -> Path:
    """Write zeros to ``path`` until the filesystem refuses; returns the file to delete. Unbuffered:
    a buffered file's last, partly refused block would be written again at its close, and fail."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return path


SEC = 10**9
T0 = 1_795_000_000 * SEC  # 2026-11-18T11:06:40Z

# rows.CONTEXT_FIELDS of a fixture's exec (cwd, cwd_status, sha256, hash_status, cgroup,
# cgroup_status, unit, container_id), and an exit's (none)
EXEC_CONTEXT = ("/var/spool/cron", "ok", "5e" * 32, "ok", "/system.slice/cron.service", "resolved",
                "cron.service", None)
NO_CONTEXT = (None,) * 8
# rows.GATE_FIELDS (abi, parent_start_ns) of a fixture's exec and exit: children of a pid 1
# started at T0 - 100 s
PARENT_START = T0 - 100 * SEC
EXEC_GATE = ("x64", PARENT_START)
EXIT_GATE = (None, PARENT_START)


def second_rows(n: int, start: int = 0, exit_code=lambda pid: 1) -> list[tuple]:
    """Record i (id i + 1 in a fresh directory) at T0 + i s, in rows.ROW_FIELDS order: the exec
    (even i) and exit (odd i) of pid 1000 + i // 2, comm sh when pid % 3 == 0 else cat, exiting
    with ``exit_code(pid)``."""
    out = []
    for i in range(start, start + n):
        t = T0 + i * SEC
        pid = 1000 + i // 2
        comm = "sh" if pid % 3 == 0 else "cat"
        if i % 2 == 0:
            out.append(("exec", t, pid, pid, 1, 1000, 1000, comm, t - 5, pid, 1000, 1000, 1, 1,
                        f"/bin/{comm}", f"{comm}\0-c\0echo {i}".encode(), 3, 0, None,
                        None, None, None, None, None) + EXEC_CONTEXT + EXEC_GATE)
        else:
            code = exit_code(pid)
            out.append(("exit", t, pid, pid, 1, 1000, 1000, comm, t - SEC - 5, None, None, None, None,
                        None, None, None, None, None, None, code << 8, code, 0, 0, SEC) + NO_CONTEXT
                       + EXIT_GATE)
    return out
