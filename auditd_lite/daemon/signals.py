"""Stop and reload requests by signal, safe whenever the signal comes.

A Python signal handler runs in the main thread between two bytecodes, also while that thread
holds a lock. A handler that takes a lock deadlocks when the main thread already holds it:
``threading.Event.set()`` takes the Event's lock, and the main thread holds that same lock for
a few bytecodes each time its ``Event.wait(timeout)`` begins or ends. A SIGTERM that came then
was never acted on, and systemd killed the process after TimeoutStopSec (the hunt unit, once, in
a loaded VM guest); the daemon had the same wait. So these handlers only set flags, and the wait
between two polls is a select() on the wake-up descriptor (``signal.set_wakeup_fd``), which
Python's own C handler writes to as the signal arrives: the wait ends at once, with no lock
(docs/design.md, "Signals").
"""

from __future__ import annotations

import os
import select
import signal
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Signals:
    """SIGTERM and SIGINT ask to stop (``stopping``); with ``reload``, SIGHUP asks to reload
    (``reloading``, which the caller clears). Made in the main thread, before anything slow: the
    default action of these signals would end the process."""

    def __init__(self, reload: bool = False):
        self.stopping = False
        self.reloading = False
        self._received: list[str] = []  # names, in order, for the caller to log (not here)
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._signums = STOP_SIGNALS + ((signal.SIGHUP,) if reload else ())
        for signum in self._signums:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self._received.append(signal.Signals(signum).name)
        if signum == signal.SIGHUP:
            self.reloading = True
        else:
            self.stopping = True

    def request_stop(self) -> None:
        """A stop asked by another thread (the printer's standard output closed)."""
        self.stopping = True
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:  # full: a wake-up is already there
            pass

    def wait(self, timeout: float) -> bool:
        """Sleep until a signal or request_stop comes, or ``timeout`` s pass; whether a stop is
        asked. A reload request ends the sleep too (and returns False)."""
        deadline = time.monotonic() + timeout
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if select.select([self._r], [], [], left)[0]:
                self._drain()
                break
        return self.stopping

    def _drain(self) -> None:
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def received(self) -> list[str]:
        """The signals received since the last call, oldest first."""
        names = []
        while self._received:
            names.append(self._received.pop(0))
        return names

    def ignore(self) -> None:
        """From now on these signals do nothing (a repeated SIGTERM during the stop)."""
        for signum in self._signums:
            signal.signal(signum, signal.SIG_IGN)
