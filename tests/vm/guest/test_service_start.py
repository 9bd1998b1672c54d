"""Inside a VM guest, first: the service that the package's postinst started
under a real systemd (tests/vm/guest.sh installs the package just before)."""

from __future__ import annotations

import json
import platform
import re
import subprocess
from pathlib import Path

from auditd_lite.capture.doctor.kernel import headers_release
from guest_helpers import STATE, UNIT, props

REPO = Path(__file__).resolve().parents[3]


def journal_json_with_time() -> list[tuple[int, dict]]:
    """(monotonic µs, record) of each JSON log line of the unit."""
    out = subprocess.run(["journalctl", "-u", UNIT, "-o", "json", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
    recs = []
    for line in out.splitlines():
        entry = json.loads(line)
        try:
            rec = json.loads(entry.get("MESSAGE", ""))
        except (TypeError, ValueError):
            continue
        if isinstance(rec, dict) and "event" in rec:
            recs.append((int(entry["__MONOTONIC_TIMESTAMP"]), {**rec, "_pid": int(entry.get("_PID", 0))}))
    return recs


def test_postinst_started_the_service():
    """Installing the package started the service: active and running, under the unit's
    capability set, without CAP_SYS_ADMIN, on this kernel's default perf_event_paranoid."""
    p = props("ActiveState", "SubState", "CapabilityBoundingSet", "MainPID", "NRestarts")
    assert (p["ActiveState"], p["SubState"]) == ("active", "running"), p
    caps = set(p["CapabilityBoundingSet"].split())
    assert caps == {"cap_bpf", "cap_perfmon", "cap_sys_ptrace", "cap_dac_read_search"}, caps
    with open(f"/proc/{p['MainPID']}/status") as f:
        eff = next(int(l.split()[1], 16) for l in f if l.startswith("CapEff:"))
    assert not eff >> 21 & 1, "the daemon holds CAP_SYS_ADMIN"
    paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    assert paranoid >= 2, paranoid  # Debian's kernels: 3
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps({"pid": int(p["MainPID"]), "restarts": int(p["NRestarts"]),
                                 "paranoid": paranoid}))


def test_active_only_after_ready():
    """The start the postinst made went through activating while the programs loaded: systemd
    started the daemon, the daemon logged programs_attached, and only then (READY=1 comes after
    it) did systemd call the service active; it never failed or restarted. (The start that
    installing the package makes, not a restart of our own: under TCG a start's compile costs
    minutes, and a restart is test_service_ops' and test_sealing's.)"""
    p = props("MainPID", "NRestarts", "Result", "ExecMainStartTimestampMonotonic",
              "ActiveEnterTimestampMonotonic", "InactiveExitTimestampMonotonic")
    pid = int(p["MainPID"])
    assert (p["Result"], int(p["NRestarts"])) == ("success", 0), p
    assert pid == json.loads(STATE.read_text())["pid"], (p, "the service is not the one the postinst started")
    began, started, enter = (int(p[k]) for k in ("InactiveExitTimestampMonotonic",
                                                   "ExecMainStartTimestampMonotonic",
                                                   "ActiveEnterTimestampMonotonic"))
    attached = [t for t, rec in journal_json_with_time()
                if rec["event"] == "programs_attached" and rec["_pid"] == pid]
    assert attached, "the daemon logged no programs_attached"
    # (systemd stamps ExecMainStart at the fork, a moment before it stamps leaving inactive)
    assert 0 < began <= attached[0] and 0 < started <= attached[0], (began, started, attached[0])
    assert attached[0] <= enter, (attached[0], enter)
    state = json.loads(STATE.read_text())
    state.update(active_at_us=enter)
    STATE.write_text(json.dumps(state))


def test_fields_from_btf_with_matching_headers():
    """This guest has the headers package of its own kernel, and the program still read every
    field at BTF offsets: its log says offsets btf. The service hooks execve with fentry/fexit on
    the execve functions (no fallback logged), and the sched raw tracepoints, never
    raw_syscalls' sys_enter/sys_exit."""
    build = Path("/lib/modules") / platform.release() / "build"
    assert (build / "include").is_dir()
    assert build.resolve().name == f"linux-headers-{platform.release()}", build.resolve()
    assert headers_release(build) == platform.release()
    pid = json.loads(STATE.read_text())["pid"]
    rec = [r for _, r in journal_json_with_time() if r["event"] == "programs_attached" and r["_pid"] == pid]
    assert rec and rec[-1]["offsets"] == "btf", rec
    fallbacks = [r for _, r in journal_json_with_time() if r["event"] == "capture_fallback"]
    assert not fallbacks, fallbacks
    assert rec[-1]["capture_mode"] == "fentry", rec
    hooks = set(rec[-1]["hooks"])
    assert {"fentry/__x64_sys_execve", "fexit/__x64_sys_execve", "fentry/__ia32_compat_sys_execve",
            "fexit/__ia32_compat_sys_execve", "sched_process_exec", "sched_process_exit"} <= hooks
    assert not {"sys_enter", "sys_exit"} & hooks


def test_doctor_passes_for_the_service():
    """`auditd-lite doctor` (the installed one) says capture can work, with the service's
    capabilities and this kernel's perf_event_paranoid, and that the service gets fentry: its
    compile line attached the fentry programs, its capture line says other calls pay nothing."""
    p = subprocess.run(["/usr/bin/auditd-lite", "doctor"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "capture can work" in p.stdout
    lines = {line.split()[1]: line for line in p.stdout.splitlines() if len(line.split()) > 1}
    assert "capture mode fentry" in lines["compile"] and "fentry/__x64_sys_execve" in lines["compile"]
    assert lines["capture"].startswith("ok    capture      fentry: execve seen at __x64_sys_execve")


def test_security_exposure_as_documented():
    """`systemd-analyze security` gives the exposure the README states."""
    readme = (REPO / "README.md").read_text()
    documented = float(re.search(r"systemd-analyze security`\s+exposure (\d+\.\d+)", readme).group(1))
    out = subprocess.run(["systemd-analyze", "security", UNIT, "--no-pager"],
                         capture_output=True, text=True).stdout
    measured = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))
    assert measured == documented, out[-2000:]
