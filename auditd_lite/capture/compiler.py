"""Compiles and loads the BPF programs in a short-lived child: the only place bcc is imported.

bcc's compiler is clang and LLVM, about 84 MiB mapped into whatever imports
it, and needed for one second at start-up. So the daemon (and doctor, which
must test the same path) starts this module as a child process; the child
compiles the program for the running kernel, creates its maps and loads
its programs without attaching them, sends the program and map file
descriptors back over a Unix socket (SCM_RIGHTS) with a description of
them, and exits. The kernel objects live on through the descriptors the
daemon now holds; the daemon attaches the programs itself (docs/design.md,
"The daemon never maps the compiler").
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CannotCapture

# program functions are named PROBE_PREFIX + tracepoint (bpf/auditd_lite.bpf.c's PROBE()):
# not bcc's raw_tracepoint__ prefix, which bcc would attach by itself as it loads
PROBE_PREFIX = "probe__"
# the maps the daemon uses; the others only the programs touch, and they hold them
MAPS = ("events", "counters")
# handed over too where the program has it: what it holds can be looked at (tests do)
CLAIMS_MAP = "exit_claims"
_MESSAGE_MAX = 65536


@dataclass(frozen=True)
class Compiled:
    """What the child handed over; the descriptors are the daemon's to close."""

    programs: dict[str, int]  # tracepoint -> program fd, in attach order
    maps: dict[str, int]  # map name -> fd: MAPS, and CLAIMS_MAP where the program has it
    offsets_source: str  # btf | headers
    exit_claims: bool

    def close(self) -> None:
        for fd in [*self.programs.values(), *self.maps.values()]:
            try:
                os.close(fd)
            except OSError:
                pass


BCC_MISSING = ("bcc's Python module is missing: install Debian's python3-bpfcc "
               "(apt-get install python3-bpfcc) and use a Python that sees it "
               "(a venv made with /usr/bin/python3 --system-site-packages)")


def import_bcc():
    """bcc's module, or CannotCapture saying in one line how to install it."""
    try:
        import bcc  # noqa: PLC0415 - only the compiler child imports it
    except ImportError as e:
        raise CannotCapture(f"{BCC_MISSING} [{e}]") from None
    return bcc


def bcc_found() -> bool:
    """Whether the child will find bcc, without importing it (and so mapping the compiler) here."""
    try:
        return importlib.util.find_spec("bcc") is not None
    except (ImportError, ValueError):
        return False


def require_bcc() -> None:
    """What import_bcc would say, said without importing it."""
    if not bcc_found():
        raise CannotCapture(BCC_MISSING)


def python_child(module: str, function: str, *args: str) -> list[str]:
    """argv running ``module.function(*args)`` in a fresh interpreter: this one, isolated (-I) as
    the installed /usr/bin/auditd-lite runs, with this copy of the package first on its path."""
    site = Path(sys.modules["auditd_lite"].__file__).resolve().parent.parent
    code = (f"import sys; sys.path.insert(0, sys.argv[1]); from {module} import {function}; "
            f"sys.exit({function}(*sys.argv[2:]))")
    return [sys.executable, "-I", "-c", code, str(site), *args]


class Child:
    """The compiler child, started; ``result()`` waits for what it hands over."""

    def __init__(self, settings):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            # stdout and stderr are ours: clang's messages reach the journal, or doctor
            self._proc = subprocess.Popen(
                python_child(__name__, "child_main", str(theirs.fileno()),
                             json.dumps(asdict(settings))),
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self._sock = ours

    def result(self) -> Compiled:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self._sock, _MESSAGE_MAX, 16)
        finally:
            self._sock.close()
        status = self._proc.wait()
        reply = json.loads(msg) if msg else None
        if reply is None or "error" in reply:
            for fd in fds:  # an error reply carries none, but a half-sent one might
                os.close(fd)
        if reply is None:  # it died before it could say anything
            raise CannotCapture(f"the BPF compiler process ended without a result (exit status "
                                f"{status}); run 'auditd-lite doctor'")
        if "error" in reply:
            if reply.get("said"):  # already one sentence of ours
                raise CannotCapture(reply["error"])
            raise CannotCapture(f"could not compile or load the BPF program: {reply['error']}; "
                                "run 'auditd-lite doctor'")
        names = reply["programs"] + reply["maps"]
        by_name = dict(zip(names, fds))
        return Compiled({tp: by_name[tp] for tp in reply["programs"]},
                        {m: by_name[m] for m in reply["maps"]}, reply["offsets"], reply["exit_claims"])

    def kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._sock.close()


def child_main(sock_fd: str, settings_json: str) -> int:
    """In the child: compile, load, hand over, exit. The reply is one message: a JSON
    description, with the program descriptors (attach order) then the maps' in its fds."""
    from . import loader  # noqa: PLC0415 - loader is the daemon's too: no bcc at its top
    from ..daemon import logsetup  # noqa: PLC0415

    # the daemon's log format, on stderr: stdout may be doctor's result line
    logsetup.configure("warning", sys.stderr)
    sock = socket.socket(fileno=int(sock_fd))
    try:
        settings = loader.ProgramSettings(**json.loads(settings_json))
        bcc = import_bcc()
        facts = loader.kernel_facts()
        tracepoints = loader.tracepoints(settings, facts)
        bpf = bcc.BPF(src_file=settings.source(), cflags=loader.cflags(settings, facts))
        fds = [bpf.load_func(PROBE_PREFIX + tp, bcc.BPF.RAW_TRACEPOINT).fd for tp in tracepoints]
        claims = loader.claims_exits(settings, facts)
        maps = list(MAPS) + ([CLAIMS_MAP] if claims else [])
        fds += [bpf[m].map_fd for m in maps]
        reply = {"programs": tracepoints, "maps": maps, "offsets": facts.source, "exit_claims": claims}
    except Exception as e:  # bcc raises bare Exception for compile and load failures
        sock.send(json.dumps({"error": str(e) or type(e).__name__,
                              "said": isinstance(e, CannotCapture)}).encode())
        return 1
    socket.send_fds(sock, [json.dumps(reply).encode()], fds)
    return 0
