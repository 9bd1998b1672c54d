"""The systemd notifier, the watchdog decision, and the real daemon speaking sd_notify."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid

import pytest
from structlog.testing import capture_logs

from auditd_lite.daemon.notify import Notifier
from auditd_lite.daemon.service import Supervisor


@pytest.fixture
def notify_socket():
    """A bound AF_UNIX datagram socket in a short temp dir (socket paths are limited to 108 bytes)."""
    d = tempfile.mkdtemp(prefix="sdn")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()
    shutil.rmtree(d)


def drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, decoded."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return out


class TestNotifier:
    def test_no_socket_is_a_no_op(self):
        """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
        n = Notifier({})
        assert not n.enabled
        assert n.ready() is False and n.watchdog_ping() is False and n.stopping() is False
        assert n.watchdog_period() is None

    def test_ready_bytes_on_a_path_socket(self, notify_socket):
        """ready() sends exactly READY=1 (and STATUS= when given) as one datagram."""
        path, sock = notify_socket
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
        assert n.ready(status="capturing")
        assert sock.recv(4096) == b"READY=1\nSTATUS=capturing"

    def test_each_message(self, notify_socket):
        """stopping, status, watchdog_ping and reloading send their systemd fields."""
        path, sock = notify_socket
        n = Notifier({"NOTIFY_SOCKET": path})
        n.stopping()
        n.status("3 records written, 0 lost")
        n.watchdog_ping()
        n.reloading()
        got = [sock.recv(4096).decode() for _ in range(4)]
        assert got[:3] == ["STOPPING=1", "STATUS=3 records written, 0 lost", "WATCHDOG=1"]
        assert got[3].startswith("RELOADING=1\nMONOTONIC_USEC=")

    def test_status_newline_cannot_inject_a_field(self, notify_socket):
        """A newline inside STATUS= text is flattened, so it cannot smuggle in READY=1."""
        path, sock = notify_socket
        Notifier({"NOTIFY_SOCKET": path}).status("x\nREADY=1")
        assert sock.recv(4096) == b"STATUS=x READY=1"

    def test_abstract_socket(self):
        """NOTIFY_SOCKET=@name reaches a socket bound in the abstract namespace."""
        name = "auditd-lite-test-" + uuid.uuid4().hex
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            sock.settimeout(5)
            assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog_ping()
            assert sock.recv(4096) == b"WATCHDOG=1"

    def test_unreachable_socket_is_not_fatal(self, tmp_path):
        """A socket path nobody listens on makes notify() return False, not raise."""
        assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready() is False

    @pytest.mark.parametrize("env,period", [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ])
    def test_watchdog_period(self, env, period):
        """WATCHDOG_USEC gives the period, but only for the process WATCHDOG_PID names."""
        assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_period() == period


class FakeNotifier:
    def __init__(self, period):
        self.period = period
        self.sent: list[str] = []

    def watchdog_period(self):
        return self.period

    def watchdog_ping(self):
        self.sent.append("WATCHDOG=1")

    def ready(self, status=None):
        self.sent.append("READY=1")

    def status(self, text):
        self.sent.append("STATUS=" + text)

    def stopping(self, status=None):
        self.sent.append("STOPPING=1")


class Thread:
    """Stands in for the collector or writer: only the heartbeat matters here."""

    def __init__(self, name, heartbeat):
        self.name = name
        self.heartbeat = heartbeat


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def supervisor(period=10.0, counts=(0, 0, 0)):
    clock = Clock()
    notifier = FakeNotifier(period)
    collector, writer = Thread("collector", clock.now), Thread("writer", clock.now)
    sup = Supervisor(notifier, (collector, writer), lambda: counts, clock=clock)
    return sup, notifier, clock, collector, writer


class TestWatchdogDecision:
    def test_pings_at_half_period_while_fresh(self):
        """With fresh heartbeats the watchdog is pinged every half period, not more often."""
        sup, n, clock, c, w = supervisor(period=10.0)
        for step in range(40):  # 20 s in 0.5 s ticks, threads beating all along
            clock.now += 0.5
            c.heartbeat = w.heartbeat = clock.now
            sup.tick()
        assert n.sent.count("WATCHDOG=1") == 4

    def test_hung_writer_stops_the_pings(self):
        """A writer whose heartbeat stops gets no more pings once it is half a period old."""
        sup, n, clock, c, w = supervisor(period=10.0)
        with capture_logs() as logs:
            for _ in range(60):  # 30 s; the collector keeps beating, the writer hung at the start
                clock.now += 0.5
                c.heartbeat = clock.now
                sup.tick()
        # one ping at 5 s, when the writer was still within half a period; none
        # after, so systemd (WatchdogSec=10) would restart the service at 15 s
        assert n.sent.count("WATCHDOG=1") == 1
        withheld = [e for e in logs if e["event"] == "watchdog_withheld"]
        assert len(withheld) == 1 and "writer" in withheld[0]["stale"]
        assert "collector" not in withheld[0]["stale"]

    def test_pings_resume_when_the_writer_recovers(self):
        """A writer that was slow but beats again gets the pings back."""
        sup, n, clock, c, w = supervisor(period=10.0)
        clock.now += 8
        c.heartbeat = clock.now
        sup.tick()
        assert n.sent.count("WATCHDOG=1") == 0
        w.heartbeat = clock.now
        clock.now += 0.5
        sup.tick()
        assert n.sent.count("WATCHDOG=1") == 1

    def test_no_watchdog_no_pings(self):
        """Without WatchdogSec= nothing is pinged and no thread is ever called stale."""
        sup, n, clock, c, w = supervisor(period=None)
        clock.now += 3600
        sup.tick()
        assert "WATCHDOG=1" not in n.sent and sup.stale_workers() == {}


class TestSummary:
    def test_summary_at_most_once_a_minute(self):
        """Ticking every half second for three minutes logs three summaries with counts and rate."""
        counts = [0, 0, 0]
        clock = Clock()
        sup = Supervisor(FakeNotifier(None), (), lambda: tuple(counts), clock=clock)
        sup.ready()
        with capture_logs() as logs:
            for _ in range(360):
                clock.now += 0.5
                counts[0] += 10  # 20 records a second
                sup.tick()
        summaries = [e for e in logs if e["event"] == "summary"]
        assert len(summaries) == 3
        assert summaries[-1]["events_written"] == 3600
        assert summaries[0]["rate_per_s"] == 20.0
        assert {"lost_kernel", "lost_user"} <= summaries[0].keys()

    def test_status_only_when_counts_change(self):
        """STATUS= is sent when the counts moved, at most every few seconds."""
        counts = [0, 0, 0]
        clock = Clock()
        n = FakeNotifier(None)
        sup = Supervisor(n, (), lambda: tuple(counts), clock=clock)
        for i in range(100):  # 50 s; counts change only once
            clock.now += 0.5
            if i == 50:
                counts[0] = 7
                counts[1] = 2
            sup.tick()
        statuses = [m for m in n.sent if m.startswith("STATUS=")]
        assert statuses == ["STATUS=capturing: 0 records written, 0 lost",
                            "STATUS=capturing: 7 records written, 2 lost"]


@pytest.mark.kernel
class TestRealDaemon:
    def test_ready_watchdog_stopping_in_order(self, notify_socket, daemon_factory, monkeypatch,
                                              tmp_path):
        """The real daemon sends READY=1 after attaching, WATCHDOG=1 pings, then STOPPING=1."""
        path, sock = notify_socket
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # pings every second
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        received: list[str] = []
        log_at_ready: list[str] = []

        def listen():
            # the socket's 5 s timeout only paces the loop: a start slower than that (a
            # loaded machine) must not end the listening before READY=1
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    msg = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                except OSError:
                    return
                if "READY=1" in msg.split("\n") and not log_at_ready:
                    # what the daemon had logged when it declared itself ready
                    log_at_ready.append((tmp_path / "daemon0.log").read_text())
                received.append(msg)
                if "STOPPING=1" in msg:
                    return

        listener = threading.Thread(target=listen)
        listener.start()
        d = daemon_factory()
        time.sleep(3.5)
        d.stop()
        listener.join(timeout=10)
        received += drain(sock)
        fields = [f for msg in received for f in msg.split("\n")]
        assert "READY=1" in fields and "WATCHDOG=1" in fields and "STOPPING=1" in fields, fields
        ready, stopping = fields.index("READY=1"), fields.index("STOPPING=1")
        pings = [i for i, f in enumerate(fields) if f == "WATCHDOG=1"]
        assert ready < pings[0] and pings[-1] < stopping
        assert len(pings) >= 2
        assert any(f.startswith("STATUS=capturing: ") and "records written" in f for f in fields)
        assert fields[-1].startswith("STATUS=stopped (status 0): ")
        assert '"programs_attached"' in log_at_ready[0] and '"database_opened"' in log_at_ready[0]
