"""The service as systemd will start it: its unit file and drop-ins (capabilities, ExecStart,
LimitMEMLOCK), the settings the daemon will run with, and what its capabilities allow with its
transport."""

from __future__ import annotations

import glob
import os
import re
import resource
import shlex
from dataclasses import dataclass
from pathlib import Path

from ... import config, runflags
from ...errors import AuditdLiteError
from .host import (ALL_CAPS, CAP_BPF, CAP_NAMES, CAP_PERFMON, CAP_SYS_ADMIN, DROPIN, FAIL, Host,
                   OK, RINGBUF_KERNEL, Result, UNIT, WARN, cap_labels, cap_number, effective_caps,
                   kernel_version)
from .kernel import _without_optional


@dataclass
class Unit:
    """The service as systemd will start it, from its unit file and drop-ins."""

    files: list[str]  # the unit file, then its drop-ins in the order systemd applies them
    installed: bool  # False: the repository's copy, which nothing starts
    caps: int | None  # the bounding set; None when the unit leaves it alone
    exec_start: list[str]
    memlock: tuple[int, int] | None  # LimitMEMLOCK as (soft, hard), -1 for infinity
    masked: bool = False

    def where(self) -> str:
        text = self.files[0] if self.installed else f"the repository's {self.files[0]}, not installed"
        extra = len(self.files) - 1
        return text + (f" + {extra} drop-in{'s' if extra > 1 else ''}" if extra else "")

    def run_flags(self) -> list[str] | None:
        """The flags ExecStart gives `run`, or None when it does not start `auditd-lite run`."""
        if "run" not in self.exec_start[1:]:
            return None
        return self.exec_start[self.exec_start.index("run", 1) + 1:]


def unit_entries(path: str):
    """(section, key, value) of a unit file, in order."""
    section, pending = "", ""
    for raw in Path(path).read_text(errors="replace").splitlines():
        line = raw.strip()
        if line[:1] in ("#", ";"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, _, value = line.partition("=")
            yield section, key.strip(), value.strip()


def merge_bounding_set(current: int | None, value: str) -> int | None:
    """One CapabilityBoundingSet= line applied as systemd does (config_parse_capability_set):
    the first line or an empty one replaces, later ones OR in, or with ~ take away."""
    invert = value.startswith("~")
    listed = 0
    for name in (value[1:] if invert else value).split():
        cap = cap_number(name)
        if cap is not None:  # systemd ignores names it does not know
            listed |= 1 << cap
    if listed == 0 or current is None:
        return ALL_CAPS & ~listed if invert else listed
    return current & ~listed if invert else current | listed


def parse_limit(value: str) -> tuple[int, int] | None:
    """LimitMEMLOCK= as systemd reads it: N, N[KMGTPE] (powers of 1024), infinity, or soft:hard."""
    def one(text: str) -> int:
        text = text.strip()
        if text == "infinity":
            return resource.RLIM_INFINITY
        m = re.fullmatch(r"(\d+)\s*([KMGTPE]?)B?", text, re.IGNORECASE)
        if not m:
            raise ValueError(text)
        return int(m.group(1)) * 1024 ** " KMGTPE".index(m.group(2).upper() or " ")
    try:
        soft, _, hard = value.partition(":")
        return one(soft), one(hard or soft)
    except ValueError:
        return None


def _masked(path: str) -> bool:
    return os.path.realpath(path) == os.devnull


def read_unit(host: Host) -> Unit | None:
    """The unit systemd would use, or the repository's copy when none is installed."""
    main = next((p for p in host.unit_files if os.path.lexists(p)), None)
    installed = main is not None
    if main is None:
        if not host.repo_unit or not os.path.isfile(host.repo_unit):
            return None
        main = host.repo_unit
    if _masked(main):
        return Unit([main], installed, None, [], None, masked=True)
    dropins: dict[str, str] = {}
    for d in host.dropin_dirs:
        for path in glob.glob(os.path.join(d, "*.conf")):
            dropins.setdefault(os.path.basename(path), path)
    files = [main] + [dropins[name] for name in sorted(dropins) if not _masked(dropins[name])]
    caps: int | None = None
    exec_start: list[str] = []
    memlock = None
    for path in files:
        for section, key, value in unit_entries(path):
            if section != "Service":
                continue
            if key == "CapabilityBoundingSet":
                caps = merge_bounding_set(caps, value)
            elif key == "ExecStart":
                # an empty ExecStart= clears the list: how a drop-in replaces it
                words = shlex.split(value) if value else []
                if words:
                    words[0] = words[0].lstrip("-@:+!")
                exec_start = words
            elif key == "LimitMEMLOCK":
                memlock = parse_limit(value) or memlock
    return Unit(files, installed, caps, exec_start, memlock)


# --- the settings the daemon will run with ---------------------------------

@dataclass
class DaemonSettings:
    settings: config.RunSettings
    sources: list[str]
    transport_from: str


def daemon_settings(host: Host, unit: Unit | None, config_file: Path | None = None,
                    overrides: dict | None = None) -> DaemonSettings:
    """The settings `auditd-lite run` will have when the unit starts it: the config file, the
    ExecStart flags on top, and doctor's own flags on top of those."""
    ours = {k: v for k, v in (overrides or {}).items() if v is not None}
    flags = unit.run_flags() if unit else None
    try:
        unit_config, theirs = runflags.parse(flags or [])
    except AuditdLiteError as e:
        raise type(e)(f"ExecStart of {unit.files[0]}: {e}") from None
    path = config_file or unit_config
    if path is None and os.path.exists(host.default_config):
        path = Path(host.default_config)
    sources = [f"config file {path}" if path else f"defaults ({host.default_config} absent)"]
    if flags:
        sources.append("ExecStart flags " + " ".join(flags))
    elif unit is not None and flags is None:
        sources.append(f"no flags from {unit.files[0]}: its ExecStart does not run `auditd-lite run`")
    if ours:
        sources.append("doctor " + " ".join(f"--{k.replace('_', '-')}" for k in ours))
    # without a file: the defaults, as run has them when the default file is absent
    settings = config.settings(path or Path(os.devnull), {**theirs, **ours})
    if "transport" in ours:
        transport_from = "doctor --transport"
    elif theirs.get("transport") is not None:
        transport_from = f"ExecStart of {unit.files[0]}"
    elif path and "transport" in config.load_file(path, required=False):
        transport_from = f"transport in {path}"
    else:
        transport_from = "the default"
    return DaemonSettings(settings, sources, transport_from)


# --- checks ----------------------------------------------------------------

def check_settings(ds: DaemonSettings) -> Result:
    s = ds.settings
    return Result(OK, "settings", f"transport {s.transport}, buffer_kb {s.buffer_kb}, max_args "
                  f"{s.max_args}, max_arg_bytes {s.max_arg_bytes}, min_duration_ms "
                  f"{s.min_duration_ms}, db_dir {s.db_dir}: from {', '.join(ds.sources)}")


def read_paranoid(host: Host) -> int | None:
    try:
        with open(host.perf_event_paranoid) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def service_caps(host: Host, unit: Unit | None) -> tuple[int, str]:
    """The capabilities the service will have, and where they come from."""
    if unit is not None and unit.caps is not None:
        return unit.caps, f"CapabilityBoundingSet of {unit.where()}"
    caps = effective_caps(host.proc_status)
    if unit is not None:
        return caps, f"root's: {unit.where()} sets no CapabilityBoundingSet"
    return caps, (f"this process's: no {UNIT} in {', '.join(os.path.dirname(p) for p in host.unit_files)}")


def check_service(host: Host, unit: Unit | None, ds: DaemonSettings) -> Result:
    """Whether the service, with its unit's capabilities, can capture with the settings'
    transport on this kernel; one line, and the fix when it cannot."""
    if unit is not None and unit.masked:
        return Result(WARN, "service", f"{unit.files[0]} is masked: the service cannot start",
                      "systemctl unmask auditd-lite, or run auditd-lite run by other means")
    caps, source = service_caps(host, unit)
    have = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    held = f"capabilities {cap_labels(caps)} ({source})"
    transport = f"transport {ds.settings.transport} ({ds.transport_from})"
    dropin = f"a drop-in {DROPIN}/capabilities.conf with [Service] CapabilityBoundingSet="

    def cannot(why: str, fix: str) -> Result:
        return Result(FAIL, "service", f"cannot capture: {why}; {held}", fix)

    try:
        before_58 = kernel_version(host.release) < RINGBUF_KERNEL
    except ValueError:
        before_58 = False
    if before_58 and not have(CAP_SYS_ADMIN):
        return cannot("before Linux 5.8 only CAP_SYS_ADMIN loads tracing programs",
                      dropin + "CAP_SYS_ADMIN")
    missing = [f"CAP_{CAP_NAMES[c].upper()}" for c in (CAP_BPF, CAP_PERFMON) if not have(c)]
    if missing and not have(CAP_SYS_ADMIN):
        return cannot(f"loading the program needs {' and '.join(missing)}",
                      dropin + " ".join(missing))
    if ds.settings.transport == "ringbuf":
        if before_58:
            return cannot(f"{transport} needs Linux 5.8", 'transport = "perfbuf" in the config file')
        how = f"{transport} needs no perf_event_open"
    else:
        paranoid = read_paranoid(host)
        if paranoid is None:
            return Result(WARN, "service", f"{transport} needs perf_event_open and "
                          f"{host.perf_event_paranoid} is unreadable: see the compile line; {held}")
        if paranoid >= 3 and not have(CAP_SYS_ADMIN):
            return cannot(
                f"{transport} needs perf_event_open, which kernel.perf_event_paranoid={paranoid} "
                "(Debian's default) allows only with CAP_SYS_ADMIN",
                f"{dropin}CAP_SYS_ADMIN, or sysctl -w kernel.perf_event_paranoid=2 (and keep it "
                "in /etc/sysctl.d/), or use the ring buffer (transport = \"ringbuf\")")
        who = "CAP_PERFMON" if paranoid < 3 and have(CAP_PERFMON) else "CAP_SYS_ADMIN"
        how = (f"{transport} needs perf_event_open, allowed at kernel.perf_event_paranoid="
               f"{paranoid} with {who}")
    poorer = _without_optional(have)
    if poorer:
        lacking, what = poorer
        return Result(WARN, "service", f"can capture: {how}; but without {lacking}: {what}; {held}",
                      dropin + lacking.replace(" and ", " "))
    return Result(OK, "service", f"can capture: {how}; {held}")


# --- compiling and loading the real program, as the service -----------------
