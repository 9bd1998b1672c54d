"""Every command the installed Debian package ships, run at least once from the installed files.

The commands are not listed here: they are read from the installed CLI's argparse parsers
(its subcommands and theirs, e.g. `db upgrade`), so a command added to the package is run
too. The known ones are run as a user would, each output checked; a command this file has no
step for is run generically (with --db-dir, -o when it has them) and must exit 0 or 1 without
a traceback; one that needs an argument nobody can guess fails the smoke, naming it.

Used by every tier that installs the package (standard library only, any python3):
- tests/test_package.py: the packages installed on this machine (Debian 12);
- tests/vm/test_userland.py: in another release's root (Debian 13), as
  `chroot ROOT python3 tests/pkgsmoke.py WORKDIR`;
- tests/vm/guest/test_every_command.py: in each VM guest, with the service's database
  (--service-db: `run` is the service itself, checked by its command line); the guests
  install auditd-lite alone, so there `export --format parquet` must say to install
  auditd-lite-lake (the two tiers above install both and read the lake back).
Prints a JSON report: the release, the Python, and each command with every argument list it ran with.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

PKG = "auditd-lite"
LAKE = "auditd-lite-lake"
HEADER = "TIME     EVENT COMM             PID     PPID    FILENAME/EXIT CODE"
# the installed program must not see a checkout or a test venv
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}

# Run by the installed python3 with only the installed library on its path: each leaf
# command's path and arguments, and the export formats, as the installed parser has them; and
# whether the writer runs the compiled hot path (its modules must load on every release's python3)
DISCOVER = r"""
import argparse, json, sys
sys.path.insert(0, sys.argv[1])
from auditd_lite import chain
from auditd_lite.capture import records
from auditd_lite.investigate import output
from auditd_lite.storage import batches
from auditd_lite.cli import build_parser

def leaves(parser, path):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        args = [{"flags": a.option_strings, "dest": a.dest, "required": bool(a.required),
                 "choices": list(a.choices) if a.choices else None}
                for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        return [{"path": path, "args": args}]
    return [leaf for s in subs for name, p in s.choices.items() for leaf in leaves(p, path + [name])]

print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "hot_path": [records.DECODER, chain.DIGESTS, batches.INSERTS, output.JSON_LINES],
                  "commands": leaves(build_parser(), [])}))
"""


class SmokeFailure(AssertionError):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SmokeFailure(what)


def installed(pkg: str) -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return "install ok installed" in p.stdout


def installed_files() -> tuple[Path, Path]:
    """(/usr/bin/auditd-lite, the directory holding auditd_lite/) as dpkg lists the package."""
    p = subprocess.run(["dpkg-query", "-L", PKG], capture_output=True, text=True)
    check(p.returncode == 0, f"{PKG} is not installed: {p.stderr.strip()}")
    files = p.stdout.split()
    cli = next((Path(f) for f in files if f.endswith("/bin/auditd-lite")), None)
    pkg = next((Path(f) for f in files if f.endswith("/auditd_lite/__init__.py")), None)
    check(cli is not None and pkg is not None, f"dpkg -L {PKG} lists no bin/auditd-lite or auditd_lite/__init__.py")
    return cli, pkg.parent.parent


def os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


class Smoke:
    def __init__(self, work: Path, service_db: Path | None = None, ran_elsewhere: dict | None = None):
        """``ran_elsewhere``: command -> the test that already ran it from the installed files
        in this same place (a VM guest's doctor: a compile there costs a minute and more under
        TCG); counted as run, not run again."""
        self.ran_elsewhere = dict(ran_elsewhere or {})
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.service_db = Path(service_db) if service_db else None
        self.cli, self.lib = installed_files()
        self.lake = installed(LAKE)
        p = subprocess.run(["/usr/bin/python3", "-I", "-c", DISCOVER, str(self.lib)], capture_output=True,
                           text=True, env=CLEAN_ENV, cwd="/")
        check(p.returncode == 0, f"cannot read the installed CLI's commands: {p.stderr[-2000:]}")
        found = json.loads(p.stdout)
        self.python = found["python"]
        check(found["hot_path"] == ["compiled", "compiled", "compiled", "orjson"],
              f"the installed writer's decoder, record digests, inserts and JSON lines: {found['hot_path']}")
        self.commands = {" ".join(c["path"]): c["args"] for c in found["commands"]}
        # command path -> every argument list it ran with
        self.ran: dict[str, list[list[str]]] = {}

    # ------------------------------------------------------------ running

    def cli_run(self, *args, ok=(0,), timeout=600, user: list[str] = ()) -> subprocess.CompletedProcess:
        """The installed command with args; its exit status must be in ok, and no traceback."""
        argv = [str(a) for a in args]
        p = subprocess.run([*user, str(self.cli), *argv], capture_output=True, text=True, env=CLEAN_ENV,
                           cwd="/", timeout=timeout)
        shown = " ".join(argv)
        check("Traceback" not in p.stderr, f"auditd-lite {shown}: a traceback\n{p.stderr[-3000:]}")
        check(p.returncode in ok, f"auditd-lite {shown}: exit {p.returncode}, not {ok}\n"
                                  f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        self.note(argv)
        return p

    def note(self, argv: list[str]) -> None:
        """Count argv as a run of the longest command path it starts with."""
        for n in (2, 1):
            key = " ".join(argv[:n])
            if key in self.commands:
                self.ran.setdefault(key, []).append(argv)
                return

    # ------------------------------------------------------------ steps

    def capture(self) -> tuple[Path, int]:
        """A known workload, `sh -c 'exit 3'`, recorded: by `run` started here, or by the
        service. Returns (database directory, the workload's pid)."""
        if self.service_db is not None:
            child = subprocess.Popen(["sh", "-c", "exit 3"])
            check(child.wait() == 3, "sh -c 'exit 3' did not exit 3")
            self.flush_service()
            self.check_service_runs_installed()
            return self.service_db, child.pid
        db = self.work / "db"
        daemon = subprocess.Popen([str(self.cli), "run", "--print", "--db-dir", str(db)], cwd="/",
                                  env=CLEAN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 180
            line = ""
            while time.monotonic() < deadline:
                line = daemon.stdout.readline().decode()
                if not line or line.rstrip("\n") == HEADER:
                    break
            check(line.rstrip("\n") == HEADER, "auditd-lite run never printed its header: "
                  + (daemon.stderr.read1(8192).decode() if line == "" else line))
            child = subprocess.Popen(["sh", "-c", "exit 3"])
            check(child.wait() == 3, "sh -c 'exit 3' did not exit 3")
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=120)
            check(daemon.returncode == 0, f"auditd-lite run: exit {daemon.returncode} at SIGTERM\n{err.decode()[-3000:]}")
            check("Traceback" not in err.decode(), f"auditd-lite run: a traceback\n{err.decode()[-3000:]}")
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        self.note(["run", "--print", "--db-dir", str(db)])
        return db, child.pid

    def flush_service(self, timeout: float = 120) -> None:
        """Returns once the service has written the exit of a process started now (so every
        earlier record: batches are committed in order)."""
        p = subprocess.Popen(["/bin/true", "pkgsmoke-flush", uuid.uuid4().hex])
        p.wait()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = self.cli_run("query", "--db-dir", self.service_db, "--pid", p.pid, "--event", "exit",
                             "--since", "10m", "--format", "json", ok=(0, 1))
            if q.returncode == 0:
                return
            time.sleep(0.5)
        raise SmokeFailure(f"the service wrote no exit for pid {p.pid} in {timeout:.0f} s")

    def check_service_runs_installed(self) -> None:
        """`run` under systemd: the unit's main process is the installed command's `run`."""
        p = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "auditd-lite.service"],
                           capture_output=True, text=True)
        pid = p.stdout.strip()
        check(pid.isdigit() and pid != "0", f"auditd-lite.service has no main process ({p.stdout}{p.stderr})")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        argv = [a.decode() for a in argv]
        check(str(self.cli) in argv and argv[argv.index(str(self.cli)) + 1] == "run",
              f"the service's main process runs {argv}, not {self.cli} run")
        self.note(["run", f"(auditd-lite.service, pid {pid})"])

    def investigate(self, db: Path, pid: int) -> None:
        q = self.cli_run("query", "--db-dir", db, "--pid", pid, "--format", "json")
        recs = [json.loads(line) for line in q.stdout.splitlines()]
        exits = [r for r in recs if r["event"] == "exit"]
        check(len(exits) == 1 and exits[0]["exit_code"] == 3 and exits[0]["signal"] == 0,
              f"query --pid {pid}: not one exit with code 3: {recs}")
        check(any(r["event"] == "exec" and r["filename"].endswith("/sh") for r in recs),
              f"query --pid {pid}: no exec of sh: {recs}")
        t = self.cli_run("tree", pid, "--db-dir", db, "--format", "json")
        check(str(pid) in t.stdout, f"tree {pid}: the pid is not in {t.stdout[:500]}")
        s = self.cli_run("sql", f"SELECT count(*) AS n FROM events WHERE pid = {pid}", "--db-dir", db)
        check(any(c.isdigit() and c != "0" for c in s.stdout.split()), f"sql: no count of pid {pid}: {s.stdout}")
        st = json.loads(self.cli_run("stats", "--db-dir", db, "--format", "json").stdout)
        check(st["events"].get("exit", 0) >= 1, f"stats: no exit counted: {st['events']}")
        cur = self.cli_run("db", "current", "--db-dir", db)
        check("audit.db: " in cur.stdout, f"db current: no live file named: {cur.stdout}")
        self.cli_run("verify", "--db-dir", db)

    def export_every_format(self, db: Path) -> None:
        """Each --format choice; parquet, where auditd-lite-lake is not installed (a
        --no-install-recommends install), says in one line to install it and exits 2."""
        formats = next(a["choices"] for a in self.commands["export"] if "--format" in a["flags"])
        for fmt in formats:
            out = self.work / ("lake" if fmt == "parquet" else f"export.{fmt}")
            if fmt == "parquet" and not self.lake:
                p = self.cli_run("export", "--db-dir", db, "--since", "1h", "--format", fmt, "-o", out, ok=(2,))
                check(p.stderr.startswith("auditd-lite: Parquet needs pyarrow: apt install auditd-lite-lake")
                      and len(p.stderr.splitlines()) == 1 and not out.exists(),
                      f"export --format parquet without the lake: {p.stderr!r}")
                continue
            p = self.cli_run("export", "--db-dir", db, "--since", "1h", "--format", fmt, "-o", out)
            n = int(p.stdout.split("exported ", 1)[1].split()[0])
            check(n >= 2, f"export --format {fmt}: {n} records ({p.stdout})")
            if fmt == "sqlite":
                self.cli_run("verify", out)
            elif fmt == "parquet":
                self.check_lake(out, n)
            else:
                lines = out.read_text().splitlines()
                check(len(lines) == n and all(json.loads(ln) for ln in lines),
                      f"export --format {fmt}: {len(lines)} JSON lines for {n} records")

    def check_lake(self, lake: Path, n: int) -> None:
        """The lake's rows, read back by the installed pyarrow under the installed python3."""
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import pyarrow.dataset as ds; "
                "print(ds.dataset(sys.argv[2], format='parquet', partitioning='hive').count_rows())")
        p = subprocess.run(["/usr/bin/python3", "-I", "-c", code, str(self.lib), str(lake)], capture_output=True,
                           text=True, env=CLEAN_ENV, cwd="/")
        check(p.returncode == 0 and p.stdout.strip() == str(n),
              f"the lake holds {p.stdout.strip() or '?'} rows, not {n}: {p.stderr[-2000:]}")

    def sign_and_seal(self, db: Path) -> None:
        key = self.work / "keys" / "signing.key"
        self.cli_run("keygen", "-o", key)
        case = self.work / "signed.db"
        self.cli_run("export", "--db-dir", db, "--since", "1h", "-o", case, "--sign", key)
        v = self.cli_run("verify", "--pubkey", key.with_suffix(".pub"), case)
        check("signed by key" in v.stdout, f"verify --pubkey: {v.stdout}")
        state = self.work / "seal"
        s = self.cli_run("seal", "setup", "--seal-state", state)
        check(s.stdout.strip() != "", "seal setup printed no verification key")
        st = self.cli_run("seal", "status", "--seal-state", state)
        check("key" in st.stdout.lower(), f"seal status: {st.stdout}")

    def upgrade(self, db: Path) -> None:
        """db upgrade on a live file the smoke owns: the daemon's, or (the service's being in
        use) a copy of an export of it."""
        if self.service_db is not None:
            own = self.work / "upgrade"
            own.mkdir()
            self.cli_run("export", "--db-dir", db, "--since", "1h", "-o", own / "audit.db")
            (own / "audit.db.sha256").unlink()
            db = own
        u = self.cli_run("db", "upgrade", "--db-dir", db)
        check(" -> " in u.stdout, f"db upgrade: {u.stdout}")

    def generic(self, path: str, db: Path) -> None:
        """A command without a step here: with --db-dir and -o when it takes them, exit 0 or 1."""
        args = self.commands[path]
        argv = path.split()
        for a in args:
            flags = a["flags"]
            if "--db-dir" in flags:
                argv += ["--db-dir", str(db)]
            elif "-o" in flags or "--output" in flags:
                argv += [flags[0], str(self.work / f"generic-{path.replace(' ', '-')}.out")]
            elif a["required"]:
                raise SmokeFailure(f"auditd-lite {path} needs {'/'.join(flags) or a['dest']}, which "
                                   f"tests/pkgsmoke.py cannot guess: give it a step there")
        self.cli_run(*argv, ok=(0, 1))

    def run_all(self) -> dict:
        v = self.cli_run("--version")
        check(v.stdout.startswith("auditd-lite "), f"--version: {v.stdout}")
        self.cli_run("--help")
        for command, where in self.ran_elsewhere.items():
            self.ran.setdefault(command, []).append([f"(run by {where})"])
        if "doctor" not in self.ran_elsewhere:
            d = self.cli_run("doctor")
            check(d.stdout.strip().splitlines()[-1] == "capture can work on this host", f"doctor:\n{d.stdout}")
        db, pid = self.capture()
        self.investigate(db, pid)
        self.export_every_format(db)
        self.sign_and_seal(db)
        self.upgrade(db)
        for path in self.commands:
            if path not in self.ran:
                self.generic(path, db)
        missing = sorted(set(self.commands) - set(self.ran))
        check(not missing, f"commands never run: {missing}")
        return {"release": os_release(), "python": self.python, "cli": str(self.cli), "lake": self.lake,
                "commands": {k: self.ran[k] for k in sorted(self.ran)}}


def main(argv: list[str]) -> int:
    """python3 tests/pkgsmoke.py WORKDIR [--service-db DIR]"""
    if not argv or len(argv) not in (1, 3):
        print(main.__doc__, file=sys.stderr)
        return 2
    service = Path(argv[2]) if len(argv) == 3 else None
    work = Path(argv[0])
    try:
        report = Smoke(work, service).run_all()
    except SmokeFailure as e:
        print(f"pkgsmoke: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
