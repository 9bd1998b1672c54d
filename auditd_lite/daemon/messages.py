"""What travels on the queue into the writer thread: the collector's hand-overs and end, and
what the daemon tells the writer about the run."""

from __future__ import annotations

from dataclasses import dataclass

# the collector's last message: everything it read is in the hand-overs before it
STOP = object()


@dataclass
class Handover:
    raw: list  # record bytes, already copied out of the buffer
    lost_kernel: int  # cumulative since load


class Attached:
    """Every program is attached (time in UTC ns), in this capture mode (loader.Programs.capture:
    the mode and why it is the fallback), which the run's settings record."""

    def __init__(self, time_ns: int, capture: dict | None = None):
        self.time_ns = time_ns
        self.capture = capture


class Seeds:
    """Processes found running at start."""

    def __init__(self, processes: list[dict]):
        self.processes = processes
