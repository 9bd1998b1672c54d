"""The load test: the real program compiled, loaded and attached, as the daemon does, in a child
bounded to the unit's capabilities and LimitMEMLOCK; its failure said in one sentence; and the
capture mode it got (docs/design.md, "Hooking execve, not every system call")."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import compiler, loader
from ... import config
from .host import (CAP_IPC_LOCK, CAP_NAMES, CAP_SYS_RESOURCE, FAIL, Host, LOAD_TIMEOUT_S, OK,
                   RESULT_MARK, Result, SKIP, WARN, _caps_line, cap_labels, effective_caps)
from .kernel import _import_bcc, expected_mode, service_facts
from .unit import DaemonSettings, Unit


# clang's and the verifier's output lines that say nothing about why
_LOG_NOISE = re.compile(r"\d+: |; |processed \d+ insns|verification time|stack depth|"
                        r"-- (BEGIN|END) PROG LOAD LOG --|HINT: |from \d+ to \d+:|"
                        r"mark_precise|last_idx|regs=|func#\d+ @")


def verifier_reason(stderr: str) -> str | None:
    """The verifier's last meaningful line, from the log bcc prints after its
    "bpf: Failed to load program" line."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("bpf: Failed to load program")]
    if not starts:
        return None
    for line in reversed(lines[starts[-1] + 1:]):
        text = line.strip()
        if text and not _LOG_NOISE.match(text):
            return text
    return None


def _last_line(stderr: str, pattern: str) -> str | None:
    found = [line.strip() for line in stderr.splitlines() if re.search(pattern, line)]
    return found[-1] if found else None


def load_failure(error: str, stderr: str) -> tuple[str, str]:
    """One sentence naming what failed, and its fix, from the exception the load raised and
    what bcc, clang and the kernel printed to stderr meanwhile."""
    if m := re.search(r"Failed to load BPF program b?'?(\w+)'?: ([^;]+)", error):
        prog, errtext = m.group(1), m.group(2).strip()
        reason = verifier_reason(stderr)
        return (f"the kernel refused program {prog} ({errtext})" + (f": {reason}" if reason else ""),
                "the settings above give a program this kernel's verifier refuses: go back to "
                "the defaults of max_args and max_arg_bytes, or report the line")
    caps_fix = "add CAP_BPF and CAP_PERFMON to the unit's CapabilityBoundingSet"
    if "Need super-user privileges" in error:
        # bcc names neither the program nor the missing capability for EPERM
        return ("the kernel refused to load the program (Operation not permitted): loading it "
                "needs CAP_BPF and CAP_PERFMON", caps_fix)
    if "Failed to compile BPF module" in error:
        # bcc creates the maps while it compiles: a refused map is reported as a compile failure
        if m := re.search(r"could not open bpf map: (\w+), error: (.+)", stderr):
            return (f"the kernel refused to create map {m.group(1)} ({m.group(2).strip()})",
                    caps_fix if "not permitted" in m.group(2) else "a smaller buffer_kb")
        line = _last_line(stderr, r":\d+:\d+: (fatal )?error: ") or "no error line from clang"
        return (f"clang could not compile {loader.PROGRAM}: {os.path.basename(line)}",
                "install the kernel headers for the running kernel (see the headers line)")
    if m := re.search(r"could not attach the program to the raw tracepoint (\w+): (.+)", error):
        return (f"the kernel could not attach raw tracepoint {m.group(1)} ({m.group(2).strip()})",
                "see the tracepoints line")
    if m := re.search(r"could not open perf buffer: ([^(]+)", error):
        # libbpf's own warning names the step (perf_event_open or mmap) and the CPU
        line = _last_line(stderr, r"^libbpf: ") or m.group(1).strip()
        fix = ("LimitMEMLOCK=infinity in the unit (without CAP_IPC_LOCK the perf buffers count "
               "against RLIMIT_MEMLOCK), a smaller buffer_kb, or the ring buffer"
               if "mmap" in line else "see the service line, or use the ring buffer")
        return f"the perf buffers could not be opened ({line.removeprefix('libbpf: ')})", fix
    if m := re.search(r"could not map the ring buffer .*?: (.+)", error):
        return f"the ring buffer could not be opened ({m.group(1).strip()})", "a smaller buffer_kb"
    first = error.strip().splitlines()[0] if error.strip() else "no message"
    return f"loading failed: {first}", "see the lines above"


def load_child(settings_json: str) -> int:
    """In the child: load, attach and release the real program with these run settings,
    exactly as the daemon does, and print one result line."""
    from ...daemon import logsetup

    # loader logs to stdout unless told otherwise: keep stdout for the result line
    logsetup.configure("error", sys.stderr)
    try:
        values = json.loads(settings_json)
        values["db_dir"] = Path(values["db_dir"])
        settings = config.RunSettings(**values)
        programs = loader.Programs(loader.ProgramSettings.for_run(settings), [])
        try:
            result = {"offsets": programs.offsets_source, "hooks": programs.hooks, **programs.capture}
        finally:
            programs.close()
    except Exception as e:  # bcc raises bare Exception; the parent turns it into one sentence
        result = {"error": str(e)}
    sys.stderr.flush()
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0 if "offsets" in result else 1


def _le(a: int, b: int) -> bool:
    """a <= b for rlimit values, RLIM_INFINITY being the largest."""
    inf = resource.RLIM_INFINITY
    return b == inf or (a != inf and a <= b)


@dataclass
class LoadPlan:
    argv: list[str]
    memlock: tuple[int, int] | None  # applied to the child before it starts
    as_whom: str  # whose capabilities, for the message


def load_plan(host: Host, unit: Unit | None, settings: config.RunSettings) -> LoadPlan:
    """How to start the child so it can do what the service can: the unit's bounding set
    (setpriv), and its LimitMEMLOCK."""
    child = compiler.python_child(__name__, "load_child", json.dumps(settings.as_dict()))
    own = effective_caps(host.proc_status)
    memlock, stand_in = None, False
    if unit is not None and unit.memlock is not None:
        _, hard_now = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if _le(unit.memlock[1], hard_now) or own >> CAP_SYS_RESOURCE & 1:
            memlock = unit.memlock
        else:
            # what a larger RLIMIT_MEMLOCK gives the perf buffers, CAP_IPC_LOCK gives too
            stand_in = settings.transport == "perfbuf" and bool(own >> CAP_IPC_LOCK & 1)
    if unit is None or unit.caps is None:
        return LoadPlan(child, memlock, "this process's capabilities" + (
            " (the unit does not limit the service's)" if unit else ""))
    if host.setpriv is None:
        return LoadPlan(child, memlock, "this process's capabilities: setpriv (util-linux) is "
                        "not installed to drop them to the unit's")
    caps, notes = unit.caps, []
    if stand_in:
        caps |= 1 << CAP_IPC_LOCK
        notes.append("CAP_IPC_LOCK standing in for the unit's LimitMEMLOCK, which this "
                     "process may not raise")
    lacking = unit.caps & ~_caps_line(host.proc_status, "CapBnd")
    if lacking:
        notes.append(f"without {cap_labels(lacking)}, which this process does not have")
    spec = ",".join(["-all"] + [f"+{n}" for i, n in enumerate(CAP_NAMES) if caps >> i & 1])
    whom = f"the unit's bounding set {cap_labels(unit.caps)}"
    return LoadPlan([host.setpriv, f"--bounding-set={spec}", *child], memlock,
                    whom + (f" ({'; '.join(notes)})" if notes else ""))


def run_load(plan: LoadPlan, timeout: float = LOAD_TIMEOUT_S) -> tuple[dict, str]:
    """Run the child; its result line, and its stderr."""
    def limit():
        if plan.memlock is not None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, plan.memlock)

    p = subprocess.run(plan.argv, capture_output=True, text=True, errors="replace",
                       timeout=timeout, preexec_fn=limit, stdin=subprocess.DEVNULL)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):]), p.stderr
    # no result line: the child died before it could write one (setpriv refused, a crash)
    last = _last_line(p.stderr, r"\S") or f"exit status {p.returncode}"
    return {"error": f"the test process ended without a result: {last}"}, p.stderr


def _can_compile(host: Host) -> str | None:
    if _import_bcc() is None:
        return "bcc is not importable"
    if host.euid != 0:
        return "needs root"
    return None


def check_compile(host: Host, unit: Unit | None, ds: DaemonSettings,
                  loaded: dict | None = None) -> Result:
    """``loaded``: filled with the capture mode the child attached and why it fell back."""
    why = _can_compile(host)
    if why:
        return Result(SKIP, "compile", why)
    plan = load_plan(host, unit, ds.settings)
    try:
        result, stderr = run_load(plan)
    except subprocess.TimeoutExpired:
        return Result(FAIL, "compile", f"compiling and loading the program took more than "
                      f"{LOAD_TIMEOUT_S} s", "try again on a less loaded machine")
    if "error" in result:
        sentence, fix = load_failure(result["error"], stderr)
        return Result(FAIL, "compile", sentence, fix)
    if loaded is not None:
        loaded.update(mode=result["mode"], fallback=result["fallback"])
    return Result(OK, "compile", f"the program (transport {ds.settings.transport}, offsets from "
                  f"{result['offsets']}, capture mode {result['mode']}) compiled, loaded and "
                  f"attached to {', '.join(result['hooks'])} with {plan.as_whom}")


def check_capture(host: Host, ds: DaemonSettings, loaded: dict | None = None) -> Result:
    """The capture mode the service gets and what it costs the programs it watches: as the
    compile check's child attached it, else as the kernel's BTF, kallsyms and ftrace predict."""
    if loaded:
        mode, fallback, how = loaded["mode"], loaded["fallback"], ""
    else:
        (mode, fallback), how = expected_mode(host, ds.settings), " (expected: nothing loaded)"
    if mode == loader.FENTRY:
        functions = [fn for _, fn in service_facts(host).exec_functions]
        return Result(OK, "capture", f"fentry{how}: execve seen at {', '.join(functions)}; "
                      "other system calls pay nothing")
    if fallback is None:
        return Result(OK, "capture", f"raw_syscalls{how}, as the settings ask: "
                      f"{loader.RAW_SYSCALLS_COST}")
    return Result(WARN, "capture", f"raw_syscalls{how}, the fallback: {fallback}; "
                  f"{loader.RAW_SYSCALLS_COST}",
                  "a kernel that attaches fentry/fexit programs (BTF, kernel.ftrace_enabled=1, "
                  "tracing programs allowed): Debian's 5.10, 6.1 and 6.12 do")
