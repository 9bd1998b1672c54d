"""Stop requests by signal (daemon/signals.py), as the daemon and hunt --follow wait for them:
a SIGTERM at any moment of the wait between two polls ends the loop, never hangs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from auditd_lite.daemon.signals import Signals
from conftest import REPO

# A poll loop ``while not wait(POLL): pass``, traced opcode by opcode: for each opcode of one
# wait, a fresh waiter and a SIGTERM sent to this process at that opcode (a signal's Python
# handler runs between two bytecodes, as here). Prints the opcodes of one wait and the longest
# time from a signal to the loop's end; a signal that deadlocks the loop leaves it hanging.
PROBE = textwrap.dedent('''
    import os, signal, sys, threading, time
    sys.path.insert(0, sys.argv[2])
    from auditd_lite.daemon.signals import Signals

    POLL = 0.2

    def make(kind):
        if kind == "signals":
            s = Signals()
            return s.wait, lambda: (os.close(s._r), os.close(s._w))
        stop = threading.Event()  # how the daemon and the hunt waited before 2026-12-07
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        return stop.wait, lambda: None

    def traced(wait, at):
        seen, sent = [0], [None]
        def tracer(frame, event, arg):
            frame.f_trace_opcodes = True
            if event == "opcode":
                if seen[0] == at:
                    sent[0] = time.monotonic()
                    os.kill(os.getpid(), signal.SIGTERM)
                seen[0] += 1
            return tracer
        sys.settrace(tracer)
        try:
            if at is None:
                wait(0.001)
            else:
                while not wait(POLL):
                    pass
        finally:
            sys.settrace(None)
        return seen[0], sent[0]

    wait, close = make(sys.argv[1])
    opcodes, _ = traced(wait, None)
    close()
    worst = 0.0
    for at in range(opcodes):
        wait, close = make(sys.argv[1])
        _, sent = traced(wait, at)
        worst = max(worst, time.monotonic() - sent)
        close()
    print(opcodes, worst, flush=True)
''')


def probe(kind: str, timeout: float) -> str | None:
    """The probe's output, or None when it was still waiting after ``timeout`` s."""
    try:
        p = subprocess.run([sys.executable, "-c", PROBE, kind, str(REPO)], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # SIGKILL: a deadlocked SIGTERM handler would not end it
        return None
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_a_sigterm_at_any_opcode_of_the_wait_ends_the_loop():
    """A SIGTERM at each opcode of Signals.wait ends the poll loop, at the latest one poll (0.2 s)
    after it, with slack for a loaded machine; and the same probe, run on threading.Event's wait
    with a handler that sets the Event (what the daemon and hunt --follow did), hangs: the probe
    can find the deadlock it is there for."""
    out = probe("signals", 120)
    assert out is not None, "a SIGTERM during Signals.wait left the loop waiting"
    opcodes, worst = out.split()
    assert int(opcodes) > 10 and float(worst) < 5.0, out
    assert probe("event", 20) is None, "threading.Event's wait survived every SIGTERM: the probe is blind"


@pytest.fixture
def handlers_restored():
    """SIGTERM's, SIGINT's and SIGHUP's handlers and the wake-up descriptor as they were before
    the test made its Signals."""
    signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = {signum: signal.getsignal(signum) for signum in signums}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
    signal.set_wakeup_fd(-1)


def test_request_stop_from_another_thread_ends_the_wait(handlers_restored):
    """request_stop (the printer's closed standard output, on its own thread) ends a wait that
    would otherwise last a minute, and the wait says stop."""
    s = Signals()
    threading.Timer(0.1, s.request_stop).start()
    t0 = time.monotonic()
    assert s.wait(60) is True
    assert time.monotonic() - t0 < 30


def test_sighup_asks_a_reload_and_ends_the_wait_without_stopping(handlers_restored):
    """With reload, SIGHUP sets reloading and ends the wait, which says no stop; the names of
    the signals received are given once, in order."""
    s = Signals(reload=True)
    os.kill(os.getpid(), signal.SIGHUP)
    assert s.wait(60) is False and s.reloading and not s.stopping
    os.kill(os.getpid(), signal.SIGTERM)
    assert s.wait(60) is True
    assert s.received() == ["SIGHUP", "SIGTERM"] and s.received() == []
