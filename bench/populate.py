#!/usr/bin/env python3
"""Write a realistic synthetic audit history through the real batch writer.

    .venv/bin/python bench/populate.py --db-dir /tmp/audit-bench --records 10000000

A simulated Debian server over --days days, ending now: systemd health
checks (`sh -c 'curl ... || exit 1'`), cron jobs, interactive ssh sessions
(with PATH searches that fail, typos that exit 127, commands killed with ^C),
a Python job runner whose workers time out (SIGTERM, SIGKILL) or crash
(SIGSEGV, core dumped), and a few recursive builds (make -> make -> ... ->
gcc -> cc1/as/ld) that make deep process trees. About 10% of the records
are failures: failed execs, non-zero exits, deaths by signal.

Everything goes through ``auditd_lite.storage.batchwriter.BatchWriter`` with size
rotation, so the files, the batches, the hash chain and the run records are
exactly what the daemon writes. Three daemon runs: a clean stop followed by
20 minutes without a daemon, an unclean stop (kill -9) followed by a reboot
(a new boot id), and the last run, with a burst of kernel-side loss. The
writer reads the wall clock for batch and run times; here it reads the
simulated clock instead (the one thing patched), so those times line up with
the records.

The choices made (pids for `tree`, time range) are written to
DIR/populate.json for bench/query_latency.py.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SEC = 10**9
MS = 10**6
US = 10**3

ENOENT, EACCES, ENOEXEC = 2, 13, 8
SIGINT, SIGKILL, SIGSEGV, SIGTERM, SIGPIPE = 2, 9, 11, 15, 13

PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

# (filename, weight, typical lifetime ms, argv generator name)
SESSION_COMMANDS = [
    ("/usr/bin/ls", 30, 3, "ls"), ("/usr/bin/cat", 12, 2, "cat"), ("/usr/bin/grep", 12, 15, "grep"),
    ("/usr/bin/less", 4, 30000, "less"), ("/usr/bin/vim.basic", 4, 120000, "vim"),
    ("/usr/bin/git", 10, 80, "git"), ("/usr/bin/ps", 5, 40, "ps"), ("/usr/bin/sudo", 5, 900, "sudo"),
    ("/usr/bin/ssh", 2, 60000, "ssh"), ("/usr/bin/tail", 3, 45000, "tail"),
    ("/usr/bin/find", 4, 400, "find"), ("/usr/bin/python3.11", 4, 1500, "py"),
    ("/usr/bin/journalctl", 3, 700, "journal"), ("/usr/bin/systemctl", 3, 120, "systemctl"),
    ("/usr/bin/curl", 3, 300, "curl"), ("/usr/bin/du", 2, 900, "du"), ("/usr/bin/top", 1, 50000, "top"),
]
TYPOS = ["sl", "gti", "grpe", "cd..", "pyhton3", "sudp", "ls-la", "vi m"]
FILES = ["/etc/passwd", "/etc/hosts", "/var/log/syslog", "/etc/nginx/nginx.conf", "README.md",
         "/etc/ssh/sshd_config", "notes.txt", "/var/log/auth.log", "main.c", "my file.txt",
         "/etc/shadow", "/proc/cpuinfo", "setup.cfg", "/var/www/html/index.html"]
WORDS = ["error", "timeout", "root", "nginx", "TODO", "failed", "GET /", "Accepted publickey", "def main"]
USERS = [(1000, "alice"), (1001, "bob"), (1002, "carol"), (0, "root")]
CRON_JOBS = [
    "cd / && run-parts --report /etc/cron.hourly",
    "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }",
    "/usr/local/bin/backup.sh --incremental /srv/data",
    "[ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then /usr/lib/php/sessionclean; fi",
    "/usr/bin/certbot -q renew",
]


def context_of(filename: str | None, session: int, uid: int, failed: bool = False) -> tuple:
    """rows.CONTEXT_FIELDS of an exec as the daemon would record it: the session's working
    directory and scope, the binary's hash (stable per path), none for a failed exec's."""
    home = "/root" if uid == 0 else f"/home/u{uid}"
    digest = (None, None) if failed else (
        hashlib.sha256(filename.encode()).hexdigest(), "ok")
    cgroup = f"/user.slice/user-{uid}.slice/session-{session}.scope"
    return (home, "ok") + digest + (cgroup, "resolved", f"session-{session}.scope", None)


NO_CONTEXT = (None,) * 8
X64 = "x64"  # rows.GATE_FIELDS' abi of every simulated exec


def comm_of(filename: str) -> str:
    return filename.rsplit("/", 1)[-1][:15]


class Sim:
    """The simulated host: its clock, pid allocator, boot, and the record heap."""

    def __init__(self, rng: random.Random, pid_max: int):
        self.rng = rng
        self.pid_max = pid_max
        self.next_pid = 2000
        self.heap: list = []
        self.seq = 0
        self.boot_wall = 0  # wall time of boot: start_ns (monotonic) = wall - boot_wall
        self.tree_roots: list[dict] = []  # deep trees, for the tree benchmark
        self.live_pids: set[int] = set()
        self.starts: dict[int, int] = {}  # pid -> start_ns of the process that has it now

    def alloc_pid(self) -> int:
        while True:
            pid = self.next_pid
            self.next_pid += 1
            if self.next_pid >= self.pid_max:
                self.next_pid = 300  # as the kernel: wrap to RESERVED_PIDS
            if pid not in self.live_pids:
                return pid

    def push(self, row: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (row[1], self.seq, row))

    # one process: exec attempts, exec, children, exit -----------------------

    def process(self, ppid: int, parent_comm: str, t_fork: int, filename: str | None, argv: list[str],
                uid: int, life_ns: int, code: int = 0, sig: int = 0, core: bool = False,
                search: bool = False, children=None, session: int = 0) -> tuple[int, int]:
        """Emit one process's records; returns (pid, exit time). ``children(pid, t0, t1)``
        may emit children between exec and exit."""
        rng = self.rng
        pid = self.alloc_pid()
        self.live_pids.add(pid)
        start = t_fork - self.boot_wall
        self.starts[pid] = start
        gate = (X64, self.starts.get(ppid, 0))
        t = t_fork + rng.randrange(40, 400) * US
        comm = parent_comm
        if filename is not None:
            raw = "\0".join(argv).encode()
            if search:  # execvp walking $PATH: the directories before the right one fail
                name = filename.rsplit("/", 1)[-1]
                for d in PATH:
                    cand = f"{d}/{name}"
                    if cand == filename:
                        break
                    self.push(("exec_failed", t, pid, pid, ppid, uid, uid, comm, start, pid, uid,
                               uid if uid else 4294967295, session, 4000 + session, cand, raw,
                               len(argv), 0, ENOENT, None, None, None, None, None)
                              + context_of(cand, session, uid, failed=True) + gate)
                    t += rng.randrange(5, 30) * US
            self.push(("exec", t, pid, pid, ppid, uid, uid, comm_of(filename), start, pid, uid,
                       uid if uid else 4294967295, session, 4000 + session, filename, raw,
                       len(argv), 0, None, None, None, None, None, None)
                      + context_of(filename, session, uid) + gate)
            comm = comm_of(filename)
        t_end = t_fork + max(life_ns, 1 * MS)
        if children is not None:
            t_end = max(t_end, children(pid, comm, t + 100 * US, t_end) + rng.randrange(50, 500) * US)
        status = (code << 8) | sig | (0x80 if core else 0)
        self.push(("exit", t_end, pid, pid, ppid, uid, uid, comm, start, None, None, None, None, None,
                   None, None, None, None, None, status, code, sig, int(core), t_end - t_fork)
                  + NO_CONTEXT + (None, gate[1]))
        self.live_pids.discard(pid)  # freed at exit (pid reuse happens after wrap-around)
        return pid, t_end

    def failed_exec(self, pid_parent: int, comm: str, t: int, uid: int, word: str, session: int) -> int:
        """A shell that cannot find a command: fork, every $PATH directory fails, exit 127."""
        rng = self.rng
        pid = self.alloc_pid()
        start = t - self.boot_wall
        parent_start = self.starts.get(pid_parent, 0)
        tt = t + rng.randrange(40, 300) * US
        raw = word.encode()
        for d in PATH:
            self.push(("exec_failed", tt, pid, pid, pid_parent, uid, uid, comm, start, pid, uid,
                       uid if uid else 4294967295, session, 4000 + session, f"{d}/{word}", raw,
                       1, 0, ENOENT, None, None, None, None, None)
                      + context_of(f"{d}/{word}", session, uid, failed=True) + (X64, parent_start))
            tt += rng.randrange(5, 30) * US
        t_end = tt + 200 * US
        self.push(("exit", t_end, pid, pid, pid_parent, uid, uid, comm, start, None, None, None, None,
                   None, None, None, None, None, None, 127 << 8, 127, 0, 0, t_end - t) + NO_CONTEXT
                  + (None, parent_start))
        return t_end


# argv generators ------------------------------------------------------------

def argv_for(kind: str, rng: random.Random) -> list[str]:
    f = rng.choice(FILES)
    if kind == "ls":
        return ["ls", rng.choice(["-la", "-l", "--color=auto", "-lh", "-1"]), rng.choice(["/", "/etc", ".", "/var/log", "~"])]
    if kind == "cat":
        return ["cat", f]
    if kind == "grep":
        return ["grep", "-rn", rng.choice(WORDS), f]
    if kind == "less":
        return ["less", f]
    if kind == "vim":
        return ["vim", f]
    if kind == "git":
        return ["git", *rng.choice([["status"], ["log", "--oneline", "-20"], ["diff"], ["pull", "--rebase"],
                                     ["commit", "-m", "fix: handle EINTR in the reader"], ["push"]])]
    if kind == "ps":
        return ["ps", "aux"]
    if kind == "sudo":
        return ["sudo", *rng.choice([["apt-get", "update"], ["systemctl", "restart", "nginx"],
                                     ["cat", "/etc/shadow"], ["tail", "-n", "50", "/var/log/auth.log"]])]
    if kind == "ssh":
        return ["ssh", rng.choice(["db1.internal", "backup@10.0.0.7", "-p", "2222", "gw"])]
    if kind == "tail":
        return ["tail", "-f", "/var/log/syslog"]
    if kind == "find":
        return ["find", rng.choice(["/etc", "/var/www", "."]), "-name", rng.choice(["*.conf", "*.py", "*.log"])]
    if kind == "py":
        return ["python3", rng.choice(["manage.py", "-c", "report.py"]), rng.choice(["migrate", "print(1)", "--since=2d"])]
    if kind == "journal":
        return ["journalctl", "-u", rng.choice(["nginx", "ssh", "cron"]), "--since", "1 hour ago"]
    if kind == "systemctl":
        return ["systemctl", "status", rng.choice(["nginx", "ssh", "cron", "auditd-lite"])]
    if kind == "curl":
        return ["curl", "-sS", rng.choice(["https://example.org/", "http://127.0.0.1:8080/health"])]
    if kind == "du":
        return ["du", "-sh", rng.choice(["/var/log", "/srv", "/home"])]
    return [kind]


# workloads ------------------------------------------------------------------

class Workload:
    SYSTEMD, CRON, SSHD, RUNNER, NGINX = 1, 612, 733, 1180, 1020

    def __init__(self, sim: Sim, rng: random.Random):
        self.sim = sim
        self.rng = rng
        self.cmd_weights = [w for _, w, _, _ in SESSION_COMMANDS]
        self.sessions = 0

    def seeds(self, t: int) -> list[dict]:
        """Long-lived processes a daemon start finds in /proc."""
        procs = [  # started this long after boot (monotonic seconds): the same in every run of a boot
            (self.SYSTEMD, 0, 0, "systemd", "/usr/lib/systemd/systemd", ["/sbin/init"], 0.4),
            (self.CRON, 1, 0, "cron", "/usr/sbin/cron", ["/usr/sbin/cron", "-f"], 5.2),
            (self.SSHD, 1, 0, "sshd", "/usr/sbin/sshd", ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"], 6.1),
            (self.NGINX, 1, 0, "nginx", "/usr/sbin/nginx", ["nginx: master process /usr/sbin/nginx"], 7.3),
            (self.RUNNER, 1, 998, "python3", "/usr/bin/python3.11", ["python3", "-m", "jobrunner", "--workers", "4"], 9.8),
        ]
        tick = 10 * MS
        out = []
        for pid, ppid, uid, comm, exe, argv, after_boot in procs:
            s = int(after_boot * SEC) // tick * tick
            out.append({"pid": pid, "ppid": ppid, "uid": uid, "comm": comm, "filename": exe,
                        "argv": "\0".join(argv).encode(), "start_ns": s, "start_tick_ns": tick})
        return out

    def healthcheck(self, t: int) -> None:
        sim, rng = self.sim, self.rng
        fail = rng.random() < 0.06
        curl_code = rng.choice([7, 22, 28]) if fail else 0

        def kids(pid, comm, t0, t1):
            _, end = sim.process(pid, comm, t0, "/usr/bin/curl",
                                 ["curl", "-fsS", "-m", "5", "http://127.0.0.1:8080/health"], 33,
                                 rng.randrange(5, 60) * MS if not fail else rng.randrange(10, 5000) * MS,
                                 code=curl_code)
            return end

        sim.process(self.SYSTEMD, "systemd", t, "/usr/bin/sh",
                    ["sh", "-c", "curl -fsS -m 5 http://127.0.0.1:8080/health || exit 1"], 33,
                    2 * MS, code=1 if fail else 0, children=kids)

    def cron(self, t: int) -> None:
        sim, rng = self.sim, self.rng
        job = rng.choice(CRON_JOBS)

        def script(pid, comm, t0, t1):
            tt = t0
            for _ in range(rng.randrange(1, 6)):
                prog = rng.choice(["/usr/bin/find", "/usr/bin/gzip", "/usr/bin/rsync", "/usr/bin/date",
                                   "/usr/bin/logger", "/usr/sbin/logrotate", "/usr/bin/awk", "/usr/bin/sed"])
                code = 1 if rng.random() < 0.07 else (23 if prog.endswith("rsync") and rng.random() < 0.2 else 0)
                _, tt = sim.process(pid, comm, tt + rng.randrange(1, 20) * MS, prog,
                                    [comm_of(prog), "-q", rng.choice(["/var/log", "/srv/data", "/tmp"])],
                                    0, rng.randrange(2, 3000) * MS, code=code, search=rng.random() < 0.3)
            return tt

        def sh_kids(pid, comm, t0, t1):
            _, end = sim.process(pid, comm, t0, "/usr/bin/run-parts" if "run-parts" in job else "/usr/local/bin/backup.sh",
                                 job.split()[:4], 0, rng.randrange(5, 500) * MS,
                                 code=1 if rng.random() < 0.05 else 0, children=script)
            return end

        def cron_child(pid, comm, t0, t1):  # cron forks, the child runs sh -c
            _, end = sim.process(pid, comm, t0, "/usr/bin/sh", ["/bin/sh", "-c", job], 0, 2 * MS,
                                 code=1 if rng.random() < 0.08 else 0, children=sh_kids)
            return end

        sim.process(self.CRON, "cron", t, None, [], 0, 1 * MS, children=cron_child)

    def session(self, t: int, hours: float) -> None:
        """An ssh login: sshd forks, a bash runs commands for a while."""
        sim, rng = self.sim, self.rng
        uid, user = rng.choice(USERS)
        self.sessions += 1
        ses = self.sessions
        n = max(1, int(rng.expovariate(1 / 40)))
        span = int(hours * 3600 * SEC)

        def git_remote(p, c, a, b):  # git talking to its remote through a helper
            _, e = sim.process(p, c, a, "/usr/lib/git-core/git-remote-https",
                               ["git-remote-https", "origin", "https://git.example.org/app.git"],
                               uid, rng.randrange(100, 2000) * MS)
            return e

        def bash_kids(pid, comm, t0, t1):
            tt = t0
            for _ in range(n):
                tt += int(rng.expovariate(n / span)) if span else rng.randrange(1, 5) * SEC
                if rng.random() < 0.04:
                    tt = sim.failed_exec(pid, comm, tt, uid, rng.choice(TYPOS), ses)
                    continue
                filename, _, life, kind = rng.choices(SESSION_COMMANDS, self.cmd_weights)[0]
                life_ns = int(rng.expovariate(1 / life) * MS) + MS
                code, sig = 0, 0
                r = rng.random()
                if r < 0.05:
                    code = rng.choice([1, 1, 1, 2, 128])
                elif r < 0.07:
                    sig = SIGINT  # ^C
                elif r < 0.075:
                    sig = SIGPIPE
                children = git_remote if kind == "git" and rng.random() < 0.5 else None
                _, end = sim.process(pid, comm, tt, filename, argv_for(kind, rng), uid, life_ns,
                                     code=code, sig=sig, search=rng.random() < 0.25,
                                     children=children, session=ses)
                tt = end  # the shell waits for its foreground command
            return tt

        def sshd_child(pid, comm, t0, t1):
            _, end = sim.process(pid, comm, t0 + 300 * MS, "/usr/bin/bash", ["-bash"], uid,
                                 span, code=0 if rng.random() < 0.9 else 130, children=bash_kids,
                                 session=ses)
            return end

        sim.process(self.SSHD, "sshd", t, "/usr/sbin/sshd", ["sshd:", f"{user}", "[priv]"], 0,
                    span, children=sshd_child, session=ses)

    def job(self, t: int) -> None:
        """A worker of the Python job runner: sometimes it times out or crashes."""
        sim, rng = self.sim, self.rng
        r = rng.random()
        code, sig, core, life = 0, 0, False, rng.randrange(50, 20000) * MS
        if r < 0.03:
            sig = SIGTERM
        elif r < 0.045:
            sig = SIGKILL
        elif r < 0.05:
            sig, core = SIGSEGV, True
        elif r < 0.09:
            code = rng.choice([1, 2, 3, 75])

        def kids(pid, comm, t0, t1):
            tt = t0
            for _ in range(rng.randrange(0, 3)):
                prog = rng.choice(["/usr/bin/ffmpeg", "/usr/bin/convert", "/usr/bin/pg_dump", "/usr/bin/tar"])
                _, tt = sim.process(pid, comm, tt + 5 * MS, prog,
                                    [comm_of(prog), "-i", f"/srv/jobs/{rng.randrange(10**6)}.in", "-o", "out"],
                                    998, rng.randrange(20, 4000) * MS, code=1 if rng.random() < 0.05 else 0)
            return tt

        sim.process(self.RUNNER, "python3", t, "/usr/bin/python3.11",
                    ["python3", "-m", "jobrunner.worker", f"--job={rng.randrange(10**7)}"], 998, life,
                    code=code, sig=sig, core=core, children=kids)

    def curl_pipe_sh(self, t: int) -> dict:
        """Someone in an ssh session types ``curl -fsSL URL | sh``: bash forks curl and sh side
        by side (one pipeline: siblings), and the script runs a child of its own."""
        sim, rng = self.sim, self.rng
        uid = rng.choice(USERS)[0]
        self.sessions += 1
        ses = self.sessions
        info = {"time_ns": t}

        def script(pid, comm, t0, t1):
            _, e = sim.process(pid, comm, t0 + 20 * MS, "/usr/bin/uname", ["uname", "-m"], uid, 2 * MS,
                               session=ses)
            return e

        def pipeline(pid, comm, t0, t1):
            info["bash_pid"] = pid
            _, e1 = sim.process(pid, comm, t0, "/usr/bin/curl",
                                ["curl", "-fsSL", "https://get.example.net/install.sh"], uid,
                                rng.randrange(200, 2000) * MS, session=ses)
            _, e2 = sim.process(pid, comm, t0 + rng.randrange(50, 500) * US, "/usr/bin/sh", ["sh"], uid,
                                rng.randrange(300, 3000) * MS, children=script, session=ses)
            return max(e1, e2)

        sim.process(self.SSHD, "sshd", t, "/usr/bin/bash", ["-bash"], uid, rng.randrange(5, 60) * SEC,
                    children=pipeline, session=ses)
        return info

    def nginx_reload(self, t: int) -> None:
        sim, rng = self.sim, self.rng
        for _ in range(2):
            sim.process(self.NGINX, "nginx", t + rng.randrange(1, 50) * MS, None, [], 33,
                        rng.randrange(600, 7200) * SEC, sig=SIGTERM if rng.random() < 0.5 else 0)

    def build(self, t: int, depth: int) -> None:
        """A recursive build: make -> sh -c 'make -C sub' -> make -> ... -> gcc -> cc1, as, ld."""
        sim, rng = self.sim, self.rng
        uid = 1000
        failing = rng.random() < 0.3
        info = {"time_ns": t, "depth": depth, "pids": []}

        def compile_unit(pid, comm, t0, last):
            src = f"src/{rng.choice(['io', 'net', 'util', 'main', 'parse'])}_{rng.randrange(100)}.c"

            def gcc_kids(p, c, a, b):
                tt = a
                for prog, args in (("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", ["cc1", "-quiet", src, "-O2"]),
                                   ("/usr/bin/x86_64-linux-gnu-as", ["as", "--64", "-o", "/tmp/ccX.o"])):
                    bad = failing and last and prog.endswith("cc1")
                    _, tt = sim.process(p, c, tt + MS, prog, args, uid, rng.randrange(30, 900) * MS,
                                        code=1 if bad else 0)
                    if bad:
                        break
                return tt

            _, end = sim.process(pid, comm, t0, "/usr/bin/gcc", ["gcc", "-O2", "-c", src],
                                 uid, 5 * MS, code=1 if failing and last else 0, search=True,
                                 children=gcc_kids)
            return end

        def level(d):
            def kids(pid, comm, t0, t1):
                info["pids"].append(pid)
                tt = t0
                units = rng.randrange(2, 5)
                for i in range(units):
                    tt = compile_unit(pid, comm, tt + MS, d == depth and i == units - 1)
                if d < depth:
                    def sh_kids(p, c, a, b):
                        _, e = sim.process(p, c, a, "/usr/bin/make", ["make", "-C", f"sub{d + 1}", "all"],
                                           uid, 10 * MS, code=2 if failing else 0, children=level(d + 1))
                        return e
                    _, tt = sim.process(pid, comm, tt + MS, "/usr/bin/sh",
                                        ["/bin/sh", "-c", f"cd sub{d + 1} && $(MAKE) all"], uid, 2 * MS,
                                        code=2 if failing else 0, children=sh_kids)
                return tt
            return kids

        pid, _ = sim.process(self.SSHD, "bash", t, "/usr/bin/make", ["make", "-j1", "all"], uid,
                             10 * MS, code=2 if failing else 0, children=level(1))
        info["root_pid"] = pid
        sim.tree_roots.append(info)


def simulate(args) -> dict:
    from auditd_lite import hostinfo
    from auditd_lite.storage import batchwriter as writer_module
    from auditd_lite.storage.rotation import RotationPolicy
    from auditd_lite.storage.batchwriter import BatchWriter

    rng = random.Random(args.seed)
    sim = Sim(rng, args.pid_max)
    work = Workload(sim, rng)
    end = time.time_ns() - 30 * SEC
    days = args.days if args.days else args.records / args.rate / 86400
    start = end - int(days * 86400 * SEC)
    span = end - start

    # the writer stamps batches and runs with the wall clock: give it the simulated one
    clock = {"now": start}

    class SimTime:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def time_ns():
            return clock["now"]

    writer_module.time = SimTime()
    sealer = None
    if args.seal_state:
        # sealing's epochs and seal times follow the simulated clock as well
        from auditd_lite import seal as seal_module
        from auditd_lite.storage import sealer as sealer_module

        class SimSealClock(SimTime):
            @staticmethod
            def monotonic():
                return clock["now"] / SEC

        seal_module.time = sealer_module.time = SimSealClock()
        clock["now"] = start
        # a bench's key: kept with its results (populate.json), as no real one may be
        seal_key = seal_module.setup(args.seal_state, args.seal_interval, force=True).text()
    boots = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2)]
    boot = {"id": boots[0]}
    hostinfo.boot_id = lambda: boot["id"]
    if args.host is not None:  # the name the runs record (a fleet: bench/lake.py)
        hostinfo.host = lambda: args.host
    # curl piped into sh, at times spread over the whole span (bench/lake.py hunts for them)
    incidents = sorted(start + int(rng.random() * span) for _ in range(args.curl_sh))
    curl_sh: list[dict] = []

    # per-record arrival rate so that N records span the time range
    # (each job kind leaves on average about this many records)
    kinds = [("health", 0.30, 4), ("cron", 0.12, 14), ("job", 0.40, 4.5), ("session", 0.004, 250),
             ("nginx", 0.002, 4), ("build", 0.0004, 420)]
    per_job = sum(w * n for _, w, n in kinds) / sum(w for _, w, _ in kinds)
    jobs_per_ns = args.records / per_job / span
    names = [k for k, _, _ in kinds]
    weights = [w for _, w, _ in kinds]

    runs = [  # (start fraction, end fraction, how it ends, boot index)
        (0.0, 0.35, "clean", 0),
        (0.35 + 20 * 60 * SEC / span, 0.62, "unclean", 0),
        (0.62 + 5 * 60 * SEC / span, 1.0, "clean", 1),
    ]
    policy = RotationPolicy(size_mb=args.rotate_mb, interval_s=None, keep=0, min_free_mb=0)
    written = 0
    batches = 0
    loss_bursts = []
    t = start
    sim.boot_wall = start - 3 * 86400 * SEC  # booted three days before the first record
    for i, (f0, f1, how, boot_index) in enumerate(runs):
        if written >= args.records:
            break
        r0, r1 = start + int(f0 * span), start + int(f1 * span)
        if boot_index == 1 and boot["id"] != boots[1]:
            boot["id"] = boots[1]
            sim.boot_wall = r0 - 90 * SEC  # rebooted 90 s before the daemon came up
            sim.heap.clear()  # nothing survives a reboot
            sim.live_pids.clear()
            sim.next_pid = 2000
        clock["now"] = r0
        if args.seal_state:
            sealer = sealer_module.Sealer(args.seal_state)
        bw = BatchWriter(args.db_dir, {"bench": "populate", "min_duration_ms": 0, "keep": 0},
                         batch_size=1000, synchronous="OFF" if args.fast else "NORMAL", rotation=policy,
                         sealer=sealer)
        bw.open()
        clock["now"] = r0 + 1500 * MS
        bw.set_attached(clock["now"])
        bw.write_seeds(work.seeds(clock["now"]))
        t = max(t, r0 + 1600 * MS)
        quota = args.records if i == len(runs) - 1 else int(args.records * (f1 - f0))
        target = min(args.records, written + quota)
        pending: list[tuple] = []
        window_end = t + args.batch_ms * MS
        next_build = t + int(rng.expovariate(1 / (3 * 3600)) * SEC)
        in_storm = False
        jobs = 0
        pushed0 = sim.seq
        while written + len(pending) < target:
            jobs += 1
            if jobs % 2000 == 0:  # aim at the run's end: records per job as measured so far
                per = max((sim.seq - pushed0) / jobs, 1.0)
                left_ns = max(r1 - t, 60 * SEC)
                jobs_per_ns = max(target - written - len(pending), 1) / per / left_ns
            t += int(rng.expovariate(jobs_per_ns)) + 1
            kind = rng.choices(names, weights)[0]
            if kind == "health":
                work.healthcheck(t)
            elif kind == "cron":
                work.cron(t)
            elif kind == "job":
                work.job(t)
            elif kind == "session":
                work.session(t, rng.uniform(0.05, 3))
            elif kind == "nginx":
                work.nginx_reload(t)
            while incidents and t >= incidents[0]:
                incidents.pop(0)
                curl_sh.append(work.curl_pipe_sh(t))
            if t >= next_build:
                work.build(t, depth=rng.randrange(8, 16))
                next_build = t + int(rng.expovariate(1 / (3 * 3600)) * SEC)
            # records due before this moment are final: batch them by time window
            heap = sim.heap
            while heap and heap[0][0] <= t and written + len(pending) < target:
                when, _, row = heapq.heappop(heap)
                if when >= window_end:
                    if pending:
                        clock["now"] = window_end
                        bw.write(pending)
                        if sealer is not None:
                            bw.maybe_rotate()  # the writer's call when idle: an epoch may end
                        written += len(pending)
                        batches += (len(pending) + 999) // 1000
                        pending = []
                    window_end = when + args.batch_ms * MS
                pending.append(row)
            # a storm in the last run: the ring buffer overflowed a few times
            if i == len(runs) - 1 and not in_storm and written > args.records * 0.8:
                in_storm = True
                for _ in range(3):
                    lost = rng.randrange(50, 5000)
                    bw.note_lost_kernel(lost)
                    loss_bursts.append(lost)
                    bw.write(pending)
                    written += len(pending)
                    pending = []
        if pending:
            clock["now"] = max(window_end, pending[-1][1] + MS)
            bw.write(pending)
            written += len(pending)
        clock["now"] = max(clock["now"], r1 if how != "unclean" else clock["now"])
        if how == "unclean":
            # kill -9: nothing more is written, the run keeps no stop time
            bw.close(clean=False)
        else:
            bw.close(clean=True)
        sim.heap.clear()  # records of processes still running are never seen (daemon gone)
        sim.live_pids.clear()
        t = r1
        print(f"run {i + 1}: {written} records written so far", file=sys.stderr)

    deep = sorted(sim.tree_roots, key=lambda r: r["time_ns"])
    info = {
        "records": written, "start_ns": start, "end_ns": end, "boots": boots,
        "tree": deep[-1] if deep else None, "trees": len(deep), "lost_kernel": sum(loss_bursts),
        "host": args.host, "curl_sh": curl_sh, "seals": sealer.state.epoch if sealer else None,
        "seal_key": seal_key if sealer else None,
    }
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-dir", type=Path, required=True)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--rate", type=float, default=40.0,
                    help="records per second on average (sets the time span, ending now)")
    ap.add_argument("--days", type=float, help="time span instead of --rate")
    ap.add_argument("--rotate-mb", type=int, default=256, help="rotation size of the live file")
    ap.add_argument("--seal-state", type=Path, metavar="DIR",
                    help="seal the chain (a new state made in DIR), epochs on the simulated clock")
    from auditd_lite.seal import DEFAULT_INTERVAL_S

    ap.add_argument("--seal-interval", type=int, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                    help=f"epoch length with --seal-state ({DEFAULT_INTERVAL_S}: the daemon's default)")
    ap.add_argument("--batch-ms", type=int, default=1000,
                    help="records of this much simulated time go into one writer batch (max 1000)")
    ap.add_argument("--pid-max", type=int, default=4194304, help="pids wrap here (Debian 12 default)")
    ap.add_argument("--seed", type=int, default=118)
    ap.add_argument("--fast", action="store_true", help="synchronous=OFF (no fsync) while populating")
    ap.add_argument("--host", help="the host name the runs record (default: this machine's)")
    ap.add_argument("--curl-sh", type=int, default=0, metavar="N",
                    help="N times over the span, someone runs curl piped into sh")
    args = ap.parse_args()
    if args.db_dir.exists() and any(args.db_dir.glob("*.db")):
        print(f"{args.db_dir} already holds databases; give an empty or new directory", file=sys.stderr)
        return 2
    os.environ.setdefault("AUDITD_LITE_LOG", "warning")
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    t0 = time.monotonic()
    info = simulate(args)
    elapsed = time.monotonic() - t0
    info["populate_s"] = round(elapsed, 1)
    (args.db_dir / "populate.json").write_text(json.dumps(info, indent=2) + "\n")
    files = sorted(args.db_dir.glob("*.db"))
    size = sum(p.stat().st_size for p in files)
    print(f"{info['records']} records in {len(files)} files, {size / 2**20:.0f} MiB, "
          f"{elapsed:.0f} s ({info['records'] / elapsed:.0f} records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
