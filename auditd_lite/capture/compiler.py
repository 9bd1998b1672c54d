"""The compiler child, seen from the daemon: started, and what it hands over received.

bcc's compiler is clang and LLVM, about 84 MiB mapped into whatever imports
it, and needed for one second at start-up. So the daemon (and doctor, which
must test the same path) starts a child process (capture/build.py, the only
place bcc is imported); the child compiles the program for the running
kernel, creates its maps and loads its programs without attaching them,
sends the program and map file descriptors back over a Unix socket
(SCM_RIGHTS) with a description of them, and exits. The kernel objects live
on through the descriptors the daemon now holds; the daemon attaches the
programs itself (docs/design.md, "The daemon never maps the compiler").
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

# raw tracepoint programs are named PROBE_PREFIX + tracepoint (bpf/auditd_lite.bpf.c's PROBE()):
# not bcc's raw_tracepoint__ prefix, which bcc would attach by itself as it loads
PROBE_PREFIX = "probe__"
# the maps the daemon uses; the others only the programs touch, and they hold them
MAPS = ("events", "counters")
# handed over too where the program has it: what it holds can be looked at (tests do)
CLAIMS_MAP = "exit_claims"
_MESSAGE_MAX = 65536
# programs (up to 12 on execve functions, 5 raw tracepoints) and maps, with room to spare
_FDS_MAX = 64


@dataclass(frozen=True)
class Compiled:
    """What the child handed over; the descriptors are the daemon's to close."""

    programs: dict[str, int]  # hook (loader.hooks) -> program fd, in attach order
    maps: dict[str, int]  # map name -> fd: MAPS, and CLAIMS_MAP where the program has it
    offsets_source: str  # btf | headers
    exit_claims: bool
    mode: str  # the capture mode loaded: loader.FENTRY or loader.RAW_SYSCALLS
    fallback: str | None = None  # why not fentry, when auto took the fallback
    timings: dict | None = None  # compile_s, and load_s by hook (the verifier's time in it)

    def close(self) -> None:
        for fd in [*self.programs.values(), *self.maps.values()]:
            try:
                os.close(fd)
            except OSError:
                pass


# where the child's code is: the daemon never imports it (it imports bcc)
CHILD_MODULE = "auditd_lite.capture.build"

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
                python_child(CHILD_MODULE, "child_main", str(theirs.fileno()),
                             json.dumps(asdict(settings))),
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self._sock = ours

    def result(self) -> Compiled:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self._sock, _MESSAGE_MAX, _FDS_MAX)
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
        if len(fds) != len(names):
            for fd in fds:
                os.close(fd)
            raise CannotCapture(f"the BPF compiler process handed over {len(fds)} descriptors for "
                                f"{len(names)} programs and maps")
        by_name = dict(zip(names, fds))
        return Compiled({hook: by_name[hook] for hook in reply["programs"]},
                        {m: by_name[m] for m in reply["maps"]}, reply["offsets"], reply["exit_claims"],
                        reply["mode"], reply.get("fallback"), reply.get("timings"))

    def kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._sock.close()
