"""The compiler child's side: compile, choose the capture mode, load, hand over, exit.

The only module that imports bcc (capture/compiler.py starts it as a child
process: docs/design.md, "The daemon never maps the compiler"). It loads
every program without attaching it; the daemon attaches them. In capture
mode auto it loads fentry/fexit programs on the execve functions where the
kernel allows them and the raw_syscalls fallback where it does not, and says
why (docs/design.md, "Hooking execve, not every system call").
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time

from . import libbpf, loader
from .compiler import CLAIMS_MAP, MAPS, import_bcc
from ..errors import CannotCapture


def _unattached(bcc):
    """bcc's BPF, but attaching nothing by itself: it attaches the functions its names mark
    (kfunc__, kretfunc__, raw_tracepoint__, ...) as it compiles, and a child's attachments end
    with the child. The daemon attaches."""

    class Unattached(bcc.BPF):
        def _trace_autoload(self):
            pass

    return Unattached


def _quietly(load):
    """``load()``, with what libbcc writes to stderr meanwhile kept (a refused program's
    verifier log): (result or None, exception or None, that text's last line)."""
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(log.fileno(), 2)
        try:
            return load(), None, ""
        except Exception as e:  # bcc raises bare Exception
            log.seek(0)
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()
                     if line.strip()]
            return None, e, lines[-1] if lines else ""
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _refusal(hook: str, error: Exception, said: str) -> str:
    """One clause saying why a tracing program did not load."""
    text = str(error)
    if "Need super-user privileges" in text:  # bcc's words for EPERM, whatever the cause
        text = "Operation not permitted"
    elif ": " in text:
        text = text.rsplit(": ", 1)[1]
    return f"the kernel refused to load the {hook} program ({text})" + (
        f": {said}" if said and said not in text and "Failed to load program" not in said else "")


def load(settings: loader.ProgramSettings, bcc) -> tuple[dict, list[int]]:
    """Compile and load; (the reply's description, the fds in its order: programs, then maps).
    The mode is chosen before compiling (one mode a compile: each copy of the argument loop is
    clang's time, minutes under TCG): what the kernel says, then the smallest fentry program
    loaded on each execve function. A refusal after that compiles the fallback."""
    facts = loader.kernel_facts()
    mode, fallback = loader.first_mode(settings, facts)
    if mode == loader.FENTRY:
        facts, refused = loader.probe_fentry(facts, libbpf.fentry_probe)
        if refused:
            if settings.capture_mode == loader.FENTRY:
                raise CannotCapture(f"capture mode fentry: {refused}")
            mode, fallback = loader.RAW_SYSCALLS, refused
    timings = {"compile_s": 0.0, "load_s": {}}
    bpf = _compile(bcc, settings, facts, mode, timings)
    fds: list[int] = []
    if mode == loader.FENTRY:
        for hook in facts.hooks(loader.FENTRY):
            fn, error, said = _quietly(lambda: _timed(timings, hook, lambda: bpf.load_func(
                loader.function_name(hook), bcc.BPF.TRACING)))
            if error is not None:
                why = _refusal(hook, error, said)
                if settings.capture_mode == loader.FENTRY:
                    raise CannotCapture(f"capture mode fentry: {why}")
                # what loaded of it is closed with the child: never attached
                fds, mode, fallback = [], loader.RAW_SYSCALLS, why
                bpf = _compile(bcc, settings, facts, mode, timings)
                break
            fds.append(fn.fd)
    hooks = loader.hooks(settings, facts, mode)
    fds += [_timed(timings, h, lambda: bpf.load_func(loader.function_name(h), bcc.BPF.RAW_TRACEPOINT)).fd
            for h in hooks if not loader.is_tracing(h)]
    claims = loader.claims_exits(settings, facts)
    maps = list(MAPS) + ([CLAIMS_MAP] if claims else [])
    fds += [bpf[m].map_fd for m in maps]
    return {"programs": hooks, "maps": maps, "offsets": facts.source, "exit_claims": claims,
            "mode": mode, "fallback": fallback, "timings": timings}, fds


def _compile(bcc, settings: loader.ProgramSettings, facts: loader.KernelFacts, mode: str, timings: dict):
    """The program compiled for ``mode``; its time added to timings' compile_s (what start-up
    spends where: clang's share, then the verifier's in each load)."""
    t0 = time.monotonic()
    bpf = _unattached(bcc)(src_file=settings.source(),
                           cflags=loader.cflags(settings, facts, fentry=mode == loader.FENTRY))
    timings["compile_s"] = round(timings["compile_s"] + time.monotonic() - t0, 3)
    return bpf


def _timed(timings: dict, hook: str, load):
    t = time.monotonic()
    try:
        return load()
    finally:
        timings["load_s"][hook] = round(time.monotonic() - t, 3)


def child_main(sock_fd: str, settings_json: str) -> int:
    """In the child: compile, load, hand over, exit. The reply is one message: a JSON
    description, with the program descriptors (attach order) then the maps' in its fds."""
    from ..daemon import logsetup  # noqa: PLC0415

    # the daemon's log format, on stderr: stdout may be doctor's result line
    logsetup.configure("warning", sys.stderr)
    sock = socket.socket(fileno=int(sock_fd))
    try:
        reply, fds = load(loader.ProgramSettings(**json.loads(settings_json)), import_bcc())
    except Exception as e:  # bcc raises bare Exception for compile and load failures
        sock.send(json.dumps({"error": str(e) or type(e).__name__,
                              "said": isinstance(e, CannotCapture)}).encode())
        return 1
    socket.send_fds(sock, [json.dumps(reply).encode()], fds)
    return 0
