"""`auditd-lite hunt` over what the real daemon recorded of real processes, and `hunt --follow`
beside it: every field and modifier against a probe that must match and a near miss that must
not, an Atomic-Red-Team-like workload against the SigmaHQ rules that cite it, the parent's
fields against the parent's real arguments, the live findings against the history's, OCSF
Detection Findings against the published 1.8.0 schema; and, without a kernel, the summary's
blind spots, the exit statuses and the bad input."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CLI, REPO, cli_in_process
from test_formats import problems, schema_validator
from test_gaps import hist  # noqa: F401  (a fixture)

DATA = REPO / "tests" / "data"
TEMPLATES = DATA / "hunt"
OCSF = json.loads((DATA / "ocsf" / "SOURCE.json").read_text())
FINDING_SCHEMA = DATA / "ocsf" / OCSF["classes"]["detection_finding"]["schema_file"]


@pytest.fixture(scope="module")
def finding_validator():
    return schema_validator(FINDING_SCHEMA)


def hunt(*args) -> tuple[int, list[dict], dict | None, str]:
    """`auditd-lite hunt ARGS --format json` in a subprocess: (status, findings, summary, stderr)."""
    p = subprocess.run([*CLI, "hunt", *map(str, args), "--format", "json"], capture_output=True,
                       cwd=REPO, timeout=300)
    lines = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert "Traceback" not in p.stderr.decode(), p.stderr.decode()
    summary = lines[-1]["summary"] if lines and "summary" in lines[-1] else None
    return p.returncode, [x for x in lines if "rule" in x], summary, p.stderr.decode()


class Follow:
    """`auditd-lite hunt --follow` in a subprocess, its output into files (a storm's findings
    would fill a pipe): started, it has logged that it follows; stopped with SIGTERM."""

    def __init__(self, tmp: Path, *args):
        self.out, self.err = tmp / "follow.out", tmp / "follow.err"
        self.proc = subprocess.Popen([*CLI, "hunt", "--follow", *map(str, args)], cwd=REPO,
                                     stdout=open(self.out, "wb"), stderr=open(self.err, "wb"))
        deadline = time.monotonic() + 60
        while b"hunt_following" not in self.err.read_bytes():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.err.read_text()
            time.sleep(0.05)

    def stop(self) -> list[dict]:
        """Stop it (after one more poll's time); its findings."""
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.err.read_text()[-2000:]
        return [json.loads(x) for x in self.out.read_text().splitlines()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def instantiate(dst: Path, **values) -> Path:
    """The rule templates of tests/data/hunt with @NAME@ filled in, written to ``dst``."""
    dst.mkdir()
    for t in TEMPLATES.glob("*.yml"):
        text = t.read_text()
        for k, v in values.items():
            text = text.replace(f"@{k}@", str(v))
        (dst / t.name).write_text(text)
    return dst


def probe(path: Path, source: str = "/bin/true", extra: bytes = b"") -> Path:
    shutil.copy(source, path)
    if extra:
        with open(path, "ab") as f:
            f.write(extra)
    path.chmod(0o755)
    return path


def run(argv, **kw) -> int:
    """Run a process to its end; its pid."""
    p = subprocess.Popen([str(a) for a in argv], **kw)
    assert p.wait() == 0
    return p.pid


def set_loginuid_0():
    with open("/proc/self/loginuid", "w") as f:
        f.write("0")


def pids_of(findings: list[dict]) -> dict[str, set]:
    out: dict[str, set] = {}
    for f in findings:
        out.setdefault(f["rule"]["id"], set()).add(f["process"]["pid"])
    return out


def rule_id(name: str) -> str:
    return next(line.split(": ", 1)[1].strip() for line in (TEMPLATES / f"{name}.yml").read_text().splitlines()
                if line.startswith("id: "))


@pytest.mark.kernel
def test_every_field_and_modifier_matches_its_probe_and_not_its_near_miss(daemon_factory, tmp_path):
    """Real processes under the daemon, one rule per field and modifier (tests/data/hunt): each
    rule finds exactly the processes made to match it, none of the near misses (one character,
    one case of a regular expression, one field different); a filter on a parent that left no
    record does not hide the match, and the finding says ParentImage was unknown."""
    tmp_path.chmod(0o755)
    d = daemon_factory()
    want: dict[str, set] = {}

    def expect(name, pid):
        want.setdefault(rule_id(name), set()).add(pid)
        return pid

    image = probe(tmp_path / "hunt-probe-image")
    probe(tmp_path / "hunt-probe-image2")
    exact = probe(tmp_path / "hunt-probe-exact")
    upper = probe(tmp_path / "HUNT-PROBE-EXACT")
    child = probe(tmp_path / "hunt-probe-child", "/bin/sh")
    parent = probe(tmp_path / "hunt-probe-parent", "/bin/sh")
    orphan = probe(tmp_path / "hunt-probe-orphan")
    filtered = probe(tmp_path / "hunt-probe-filtered-parent", "/bin/sh")
    hashed = probe(tmp_path / "hunt-probe-hashed", extra=b"\0auditd-lite hunt probe\0")
    (tmp_path / "hunt-probe-cwd").mkdir()
    (tmp_path / "hunt-probe-cwdx").mkdir()

    expect("image_endswith", run([image]))
    run([tmp_path / "hunt-probe-image2"])
    expect("image_eq", run([exact]))
    expect("image_eq", run([upper]))  # Sigma's strings ignore case
    run([probe(tmp_path / "hunt-probe-exact2")])
    expect("cmd_contains", run(["/bin/true", "a", "xhunt-probe-containsx"]))
    run(["/bin/true", "a", "hunt-probe-contain"])
    expect("cmd_contains_all", run(["/bin/true", "omega-probe", "alpha-probe"]))
    run(["/bin/true", "alpha-probe", "omega-prob"])
    expect("cmd_startswith", run(["hunt-probe-start", "x"], executable="/bin/true"))
    run(["xhunt-probe-start", "x"], executable="/bin/true")
    expect("cmd_eq", run(["hunt-probe-eq", "one", "two"], executable="/bin/true"))
    run(["hunt-probe-eq", "one", "two", "three"], executable="/bin/true")
    expect("cmd_eq", run(["hunt-probe-wild", "one", "more", "words"], executable="/bin/true"))
    run(["hunt-probe-wild", "onex"], executable="/bin/true")
    expect("cmd_re", run(["/bin/true", "hunt-probe-re-123X"]))
    run(["/bin/true", "hunt-probe-re-123x"])  # re is case-sensitive
    # the child probe is a shell that writes its pid; run by the parent probe, a shell too
    # (`child; true`: the parent forks for the child rather than exec it)
    pidfile = tmp_path / "child.pid"

    def child_of(parent_argv):
        run(parent_argv)
        return int(pidfile.read_text())
    script = f"{child} -c 'echo $$ > {pidfile}'; true"
    expect("parent", child_of([parent, "-c", script, "parent-marker"]))
    child_of([parent, "-c", script, "other-name"])  # ParentCommandLine without the marker
    child_of(["/bin/sh", "-c", script, "parent-marker"])  # ParentImage another program
    expect("image_endswith", expect("cwd", run([image], cwd=tmp_path / "hunt-probe-cwd")))
    expect("image_endswith", run([image], cwd=tmp_path / "hunt-probe-cwdx"))
    expect("user", run(["/bin/true", "hunt-probe-user"], user="nobody"))
    run(["/bin/true", "hunt-probe-user"])
    expect("logonid", run(["/bin/true", "hunt-probe-logon"], preexec_fn=set_loginuid_0))
    run(["/bin/true", "hunt-probe-logon"])  # login uid unset: 4294967295
    the_pid = expect("pids", run(["/bin/true", "hunt-probe-pids"]))
    run(["/bin/true", "hunt-probe-pids"])
    expect("hashes", run([hashed]))
    # a parent that forked without exec'ing (a python fork child): it left no record of its own
    code = ("import os, subprocess, sys\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    p = subprocess.Popen([sys.argv[1]]); p.wait(); print(p.pid, flush=True); os._exit(0)\n"
            "os.waitpid(pid, 0)\n")
    out = subprocess.run([sys.executable, "-c", code, str(orphan)], capture_output=True, check=True)
    unknown_parent = expect("not_unknown_parent", int(out.stdout))
    run([filtered, "-c", f"{orphan}; true"])  # its parent is the filtered program: no match
    d.stop()

    sha = hashlib.sha256(hashed.read_bytes()).hexdigest().upper()
    rules_dir = instantiate(tmp_path / "rules", DIR=tmp_path, PID=the_pid, PPID=os.getpid(), SHA256=sha)
    status, findings, summary, err = hunt("--db-dir", d.db_dir, "--rules", rules_dir, "--no-bundled")
    assert status == 0, err
    assert pids_of(findings) == want
    assert summary["rules"]["evaluated"] == len(list(TEMPLATES.glob("*.yml")))
    orphan_finding = next(f for f in findings if f["process"]["pid"] == unknown_parent)
    assert orphan_finding["unknown"] == ["ParentImage"]
    assert orphan_finding["parent"]["from"] is None and orphan_finding["parent"]["why"]


def atomic_workload(tmp: Path) -> tuple[dict[int, set], list[int]]:
    """Harmless commands of the kind Atomic Red Team's Linux tests run, in ``tmp`` (its
    HISTFILE too): {pid: the SigmaHQ rule ids it must fire}, and the pids of a benign control
    that must fire none."""
    want: dict[int, set] = {}
    pidfile = tmp / "pids"

    def traced(script: str) -> list[int]:
        """Run ``script`` in sh with a shell function that records each command's pid."""
        pidfile.write_text("")
        subprocess.run(["/bin/sh", "-c", script], cwd=tmp, check=True, env={**os.environ, "P": str(pidfile)},
                       stdout=subprocess.DEVNULL)
        return [int(x) for x in pidfile.read_text().split()]

    # T1082 System Information Discovery, T1087.001 Local Account, T1069.001 Local Groups,
    # T1057 Process Discovery: each as its own process (exec'd by sh, which records its pid)
    discovery = {
        "uname -a": "42df45e7-e6e9-43b5-8f26-bec5b39cc239",  # System Information Discovery
        "id": "b45e3d6f-42c6-47d8-a478-df6bd6cf534c",  # Local System Accounts Discovery - Linux
        "cat /etc/passwd": "b45e3d6f-42c6-47d8-a478-df6bd6cf534c",
        "cat /etc/group": "676381a6-15ca-4d73-a9c8-6a22e970b90d",  # Local Groups Discovery - Linux
        "ps -ef": "4e2f5868-08d4-413d-899f-dc2f1508627b",  # Process Discovery
    }
    for cmd, rid in discovery.items():
        [pid] = traced(f"sh -c 'echo $$ >> $P; exec {cmd}' > /dev/null")
        want[pid] = {rid}
    # T1140 / T1059.004: base64 decoded and piped to a shell
    payload = base64.b64encode(b"echo atomic > /dev/null\n").decode()
    # (the stages run at once: the one of base64 records its pid alone)
    traced(f"sh -c 'exec echo {payload}' | sh -c 'echo $$ >> $P; exec base64 -d' | sh")
    want[int(pidfile.read_text())] = {"e2072cab-8c9a-459b-b63c-40ae79e27031"}  # Decode Base64 Encoded Text
    # T1070.003: the history of a temporary HISTFILE cleared
    hist = tmp / ".bash_history"
    hist.write_text("ls\n")
    [pid] = traced(f"HISTFILE={hist} sh -c 'echo $$ >> $P; exec rm \"$HISTFILE\"'")
    want[pid] = {"1182f3b3-e716-4efa-99ab-d2685d04360f"}  # History File Deletion
    # T1059.004 from a temporary directory: a program run out of /tmp
    program = probe(tmp / "atomic-tmp-prog")
    [pid] = traced(f"sh -c 'echo $$ >> $P; exec {program}'")
    want[pid] = {"312b42b1-bded-4441-8b58-163a3af58775"}  # Potentially Suspicious Execution From Tmp Folder
    control = traced("sh -c 'echo $$ >> $P; exec date' > /dev/null; sh -c 'echo $$ >> $P; exec true'; "
                     "sh -c 'echo $$ >> $P; exec printf x' > /dev/null")
    return want, control


@pytest.mark.kernel
def test_atomic_workload_live_and_over_history(daemon_factory, tmp_path, finding_validator):
    """`hunt --follow` started before the daemon, then an Atomic-Red-Team-like workload: each
    command fires the SigmaHQ rules that cite it and the benign control none; --follow found
    exactly what the hunt over the history finds, and wrote the same OCSF Detection Finding
    lines `hunt --format ocsf` prints, each valid against the published 1.8.0 schema."""
    tmp_path.chmod(0o755)
    db = tmp_path / "db0"
    db.mkdir(mode=0o750)
    findings_file = tmp_path / "live" / "findings.jsonl"
    follow = Follow(tmp_path, "--db-dir", db, "--findings", findings_file, "--poll-ms", "100")
    try:
        d = daemon_factory()
        work = tmp_path / "work"
        work.mkdir()
        want, control = atomic_workload(work)
        d.stop()
        live = follow.stop()
    finally:
        follow.kill()

    status, found, summary, _ = hunt("--db-dir", d.db_dir)
    assert status == 0
    fired = pids_of(found)
    by_pid: dict[int, set] = {}
    for rid, pids in fired.items():
        for pid in pids:
            by_pid.setdefault(pid, set()).add(rid)
    for pid, rids in want.items():
        assert rids <= by_pid.get(pid, set()), (pid, rids, by_pid.get(pid))
    assert [by_pid.get(pid, set()) for pid in control] == [set()] * len(control)

    key = lambda f: (f["rule"]["id"], f["record"]["id"])  # noqa: E731
    assert sorted(map(key, live)) == sorted(map(key, found)) and live
    history_ocsf = subprocess.run([*CLI, "hunt", "--db-dir", d.db_dir, "--format", "ocsf"],
                                  capture_output=True, cwd=REPO).stdout.decode().splitlines()
    live_ocsf = findings_file.read_text().splitlines()
    assert sorted(live_ocsf) == sorted(history_ocsf)
    for line in live_ocsf:
        event = json.loads(line)
        assert problems(finding_validator, event) == [], event["finding_info"]["title"]
    assert summary["execs"] >= len(want) and summary["parents"]["looked_up"] >= len(found)


@pytest.mark.kernel
def test_parent_fields_are_the_parents_real_arguments(daemon_factory, tmp_path):
    """A finding's ParentImage and ParentCommandLine are the program and arguments the parent
    was started with (a shell with a unique argument list, which forks the child)."""
    tmp_path.chmod(0o755)
    d = daemon_factory()
    marker = f"parent-{os.getpid()}-{time.time_ns()}"
    argv = ["/bin/sh", "-c", "uname -a > /dev/null; true", marker, "second arg"]
    parent = subprocess.Popen(argv)
    assert parent.wait() == 0
    d.stop()
    status, found, _, _ = hunt("--db-dir", d.db_dir, "--rule", "42df45e7-e6e9-43b5-8f26-bec5b39cc239")
    mine = [f for f in found if f["process"]["ppid"] == parent.pid]
    assert status == 0 and len(mine) == 1
    p = mine[0]["parent"]
    assert (p["pid"], p["image"], p["argv"], p["from"]) == (parent.pid, "/bin/sh", argv, "exec")
    assert p["command_line"] == " ".join(argv)
    assert mine[0]["process"]["argv"] == ["uname", "-a"]


# --- without a kernel -------------------------------------------------------------

MATCH_SH = "title: sh\nid: 44444444-4444-4444-8444-444444444444\nstatus: test\nauthor: tests\n" \
           "logsource:\n    product: linux\n    category: process_creation\n" \
           "detection:\n    s:\n        Image|endswith: /sh\n    condition: s\nlevel: high\n"


def test_summary_says_what_the_rules_could_not_see(hist, tmp_path):  # noqa: F811
    """Over files with a stop, an unclean stop and lost records, the summary (JSON and table)
    lists each as a stretch the rules could not see, as query warns of them; each exec is
    a finding of the rule that matches every sh."""
    (tmp_path / "sh.yml").write_text(MATCH_SH)
    status, out, err = cli_in_process("hunt", "--db-dir", hist, "--rules", tmp_path / "sh.yml",
                                      "--no-bundled", "--format", "json")
    lines = [json.loads(x) for x in out.splitlines()]
    summary = lines[-1]["summary"]
    assert status == 0 and summary["findings"] == len(lines) - 1 == 8 == summary["execs"]
    assert [g["kind"] for g in summary["gaps"]] == ["not_running", "lost", "unclean_stop", "not_running"]
    assert summary["blind"][1] == ("the rules could not see 2026-11-20T10:41:00.000000Z .. "
                                   "2026-11-20T10:42:30.000000Z: 45 records lost (kernel 42, user 3) in run 2")
    status, out, _ = cli_in_process("hunt", "--db-dir", hist, "--rules", tmp_path / "sh.yml", "--no-bundled",
                                    "--since", "2026-11-20T10:41:00Z", "--until", "2026-11-20T10:43:00Z")
    assert status == 0 and out.count("HIGH") == 3  # the execs at 10:41, 10:42 and 10:42:20
    assert summary["blind"][1] + "\n" in out and "no daemon running" not in out


def test_exit_status_found_none_and_bad_rule_file(hist, tmp_path):  # noqa: F811
    """0 with findings, 1 without; a rule file that does not parse is named with why on
    standard error, the other rules still run and print their findings, and the status is 2."""
    rules_dir = tmp_path / "r"
    rules_dir.mkdir()
    (rules_dir / "sh.yml").write_text(MATCH_SH)
    assert cli_in_process("hunt", "--db-dir", hist, "--rules", rules_dir, "--no-bundled")[0] == 0
    status, out, _ = cli_in_process("hunt", "--db-dir", hist, "--rules", rules_dir, "--no-bundled",
                                    "--since", "2026-11-20T12:00:00Z")
    assert status == 1 and out.startswith("0 findings")
    (rules_dir / "broken.yml").write_text("detection: [\n")
    status, out, err = cli_in_process("hunt", "--db-dir", hist, "--rules", rules_dir, "--no-bundled",
                                      "--format", "json")
    assert status == 2 and len([x for x in out.splitlines() if '"rule"' in x]) == 8
    assert err.count("\n") == 1 and f"rule file {rules_dir / 'broken.yml'} did not parse: " in err


def test_ocsf_findings_from_files_are_valid(hist, tmp_path, finding_validator):  # noqa: F811
    """--format ocsf: one Detection Finding a line, valid against the published schema, its
    severity the rule's level, the exec as evidence with its parent, the author kept; the
    summary goes to standard error."""
    (tmp_path / "sh.yml").write_text(MATCH_SH)
    status, out, err = cli_in_process("hunt", "--db-dir", hist, "--rules", tmp_path / "sh.yml",
                                      "--no-bundled", "--format", "ocsf")
    events = [json.loads(x) for x in out.splitlines()]
    assert status == 0 and len(events) == 8 and "8 findings of 1 rule" in err
    for e in events:
        assert problems(finding_validator, e) == []
        assert (e["class_uid"], e["severity_id"], e["finding_info"]["analytic"]["uid"]) == \
            (2004, 4, "44444444-4444-4444-8444-444444444444")
        assert e["evidences"][0]["process"]["path"] == "/bin/sh"
        assert e["unmapped"]["rule_author"] == "tests"
    bad = dict(events[0])
    del bad["finding_info"]
    assert problems(finding_validator, bad) != []  # the validation can fail


@pytest.mark.parametrize("argv,needle", [
    (["--findings", "x"], "--findings goes with --follow"),
    (["--follow", "--until", "1h"], "--until has no end"),
    (["--rule", "no-such-rule"], "bad --rule 'no-such-rule'"),
    (["--rules", "/nonexistent/rules"], "bad --rules /nonexistent/rules"),
    (["--no-bundled"], "--no-bundled leaves no rule"),
    (["--level", "severe"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(hist, argv, needle):  # noqa: F811
    status, out, err = cli_in_process("hunt", "--db-dir", hist, *argv)
    assert status == 2 and err.count("\n") == 1 and needle in err, err


@pytest.mark.kernel
def test_follow_reads_every_batch_across_rotations(daemon_factory, tmp_path, marker):
    """A storm of execs from a temporary directory (each a finding of SigmaHQ's tmp-folder rule)
    into a live file rotated every MiB, followed meanwhile: --follow reports every exec once,
    the same findings as the hunt over the rotated files afterwards, misses no batch, and never
    keeps the daemon from rotating."""
    from conftest import Storm, log_events

    rule = "312b42b1-bded-4441-8b58-163a3af58775"  # Potentially Suspicious Execution From Tmp Folder
    db = tmp_path / "db0"
    db.mkdir(mode=0o750)
    follow = Follow(tmp_path, "--db-dir", db, "--rule", rule, "--poll-ms", "100")
    try:
        d = daemon_factory("--rotate-size-mb", "1")
        with Storm(marker) as storm:
            while storm.count() < 6000:
                time.sleep(0.1)
        d.stop()
        live = follow.stop()
    finally:
        follow.kill()
    assert len(log_events(d.log, "rotated")) >= 2
    assert not log_events(follow.err.read_text(), "hunt_batches_missed")
    status, found, _, _ = hunt("--db-dir", d.db_dir, "--rule", rule)
    key = lambda f: (f["record"]["file"].rsplit("/", 1)[-1], f["record"]["id"])  # noqa: E731
    spawned = {pid for pid, _, _ in storm.children}
    assert spawned <= {f["process"]["pid"] for f in found}
    assert len(live) == len(found) and len({(f["process"]["pid"], f["process"]["start_ns"]) for f in live}) == len(live)
    assert {(f["process"]["pid"], f["process"]["start_ns"]) for f in live} == \
        {(f["process"]["pid"], f["process"]["start_ns"]) for f in found}
    assert len(set(map(key, found))) == len(found)


def test_follow_from_a_time_to_the_journal_and_ocsf_on_stdout(hist, tmp_path):  # noqa: F811
    """--follow --since T reads the records from T before following: over files no daemon
    writes, it reports the window's findings, logs that no daemon runs, and stops on SIGTERM
    with status 0. With standard output the journal's stream, each JSON line begins with its
    rule's syslog priority; with --findings - or --format ocsf, the lines are OCSF Detection
    Findings instead."""
    (tmp_path / "sh.yml").write_text(MATCH_SH)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        p = subprocess.Popen([*CLI, "hunt", "--follow", "--db-dir", hist, "--rules", tmp_path / "sh.yml",
                              "--no-bundled", "--since", "2026-11-20T10:41:00Z", "--poll-ms", "50"],
                             stdout=f, stderr=subprocess.PIPE, env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while out.read_bytes().count(b"\n") < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            p.send_signal(signal.SIGTERM)
            err = p.communicate(timeout=60)[1].decode()
    assert p.returncode == 0, err
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and all(line.startswith('<3>{"rule":') for line in lines)  # high: err
    assert "hunt_daemon_not_running" in err and "hunt_stopped" in err
    for ocsf in (["--findings", "-"], ["--format", "ocsf"]):
        p = subprocess.Popen([*CLI, "hunt", "--follow", "--db-dir", hist, "--rules", tmp_path / "sh.yml",
                              "--no-bundled", "--since", "2026-11-20T11:00:00Z", *ocsf],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        first = json.loads(p.stdout.readline())
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=60)
        assert first["class_uid"] == 2004 and len(rest.splitlines()) == 1 and p.returncode == 0, ocsf


def test_follow_as_a_table_prints_the_history_s_blocks(hist, tmp_path):  # noqa: F811
    """--follow --format table prints each finding as the history's table does (the same blocks,
    parted by a blank line, without the summary a window ends with); --findings - (OCSF lines on
    standard output) with --format table is bad input: one line, exit 2."""
    (tmp_path / "sh.yml").write_text(MATCH_SH)
    rules = ["--rules", tmp_path / "sh.yml", "--no-bundled", "--since", "2026-11-20T10:41:00Z"]
    status, table, _ = cli_in_process("hunt", "--db-dir", hist, *rules)
    assert status == 0
    blocks = table.split("\n\n")[:-1]  # the last part is the summary
    assert len(blocks) == 6, table
    out = tmp_path / "out"
    with open(out, "wb") as f:
        p = subprocess.Popen([*CLI, "hunt", "--follow", "--db-dir", hist, *rules, "--poll-ms", "50",
                              "--format", "table"], stdout=f, stderr=subprocess.PIPE, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while out.read_text().count("\n    record ") < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            p.send_signal(signal.SIGTERM)
            err = p.communicate(timeout=60)[1].decode()
    assert p.returncode == 0, err
    assert out.read_text() == "\n\n".join(blocks) + "\n"
    status, _, err = cli_in_process("hunt", "--follow", "--db-dir", hist, *rules, "--findings", "-",
                                    "--format", "table")
    assert status == 2 and err.count("\n") == 1 and "not with --format table" in err, err


def test_follow_needs_a_directory(tmp_path):
    """--follow follows a directory a daemon writes: --db is bad input, as is a directory that
    is not there."""
    status, _, err = cli_in_process("hunt", "--follow", "--db", tmp_path / "x.db")
    assert status == 2 and "give --db-dir, not --db" in err
    status, _, err = cli_in_process("hunt", "--follow", "--db-dir", tmp_path / "nothing")
    assert status == 2 and "no such database directory" in err


def test_a_poll_the_live_file_refuses_midway_is_read_again_whole(hist, tmp_path, monkeypatch):  # noqa: F811
    """A poll whose reading fails midway (SQLite refuses a reader while the daemon rotates the
    live file) writes nothing and keeps its place; the next poll reads the batch whole: each
    finding once."""
    import sqlite3

    from auditd_lite.hunt import follow, rules
    from auditd_lite.hunt.hunter import Hunter
    from test_gaps import History, at, exec_row

    (tmp_path / "sh.yml").write_text(MATCH_SH)
    rs = rules.load([tmp_path / "sh.yml"], bundled=False)
    out = io.StringIO()
    f = follow.Follower(hist, rs.evaluable(), out, None, False)
    f.start(None)
    f.poll()
    assert out.getvalue() == "" and f.cursor == 8
    h = History(hist)  # two more execs in a new batch of the live file
    h.conn = sqlite3.connect(hist / "audit.db")
    h.prev = h.conn.execute("SELECT hash FROM batches ORDER BY id DESC LIMIT 1").fetchone()[0]
    h.next_event = h.conn.execute("SELECT max(id) FROM events").fetchone()[0] + 1
    h.next_batch = 9
    h.batch(3, at(11, 29, 30), [exec_row(at(11, 29, 10), 302), exec_row(at(11, 29, 20), 303)])
    h.close()
    real = Hunter._findings
    calls = []

    def refuse_second(self, i, ev, matched):
        calls.append(ev.row)
        if len(calls) == 2:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(self, i, ev, matched)
    monkeypatch.setattr(Hunter, "_findings", refuse_second)
    f.poll()
    assert out.getvalue() == "" and f.cursor == 8 and f.findings == 0
    f.poll()
    pids = [json.loads(x)["process"]["pid"] for x in out.getvalue().splitlines()]
    assert pids == [302, 303] and f.cursor == 9 and f.hunter.examined == 2


def test_follow_leaves_out_a_set_aside_file_sqlite_cannot_read(hist, tmp_path, capsys):  # noqa: F811
    """A set-aside file SQLite cannot read (a live file is set aside when it refuses a batch) is
    left out with one warning, as every reading command leaves it out (dbfiles.database_files):
    --follow still reads every batch of the other files, and its polls go on."""
    from auditd_lite.hunt import follow, rules

    (hist / "audit-damaged-20261120T105000Z.db.damaged").write_bytes(b"not a database\n" * 512)
    (tmp_path / "sh.yml").write_text(MATCH_SH)
    rs = rules.load([tmp_path / "sh.yml"], bundled=False)
    out = io.StringIO()
    f = follow.Follower(hist, rs.evaluable(), out, None, False)
    f.start(0)
    f.poll()
    f.poll()
    assert len(out.getvalue().splitlines()) == 8 and f.cursor == 8
    warned = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("auditd-lite: warning: skipping ") and "audit-damaged-20261120T105000Z" in line]
    assert len(warned) == 1
