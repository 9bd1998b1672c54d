"""`auditd-lite doctor`: can this host capture, and if not, what to do about it.

Each check is a function returning one Result; a check that crashes is
reported as a failure of that check, never as a traceback. Checks that need
bcc or root say so instead of failing obscurely when they are missing.

What matters is what the service will be able to do, not what the root shell
running doctor can do: the unit's capability bounding set, the settings the
daemon will run with, and the real program compiled, loaded and attached
with both, in a child process that has only the unit's capabilities.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, TextIO

from ... import config, seal, timeparse
from ...errors import AuditdLiteError
from .host import FAIL, Host, LOW_FREE_MB, OK, Result, SKIP, WARN
from .kernel import (check_bcc, check_btf, check_headers, check_kernel, check_privileges,
                     check_tracefs, check_tracepoints)
from .load import check_capture, check_compile
from .unit import DaemonSettings, Unit, check_service, check_settings, daemon_settings, read_unit


def check_db_dir(db_dir: Path) -> Result:
    d = Path(db_dir)
    probe = d
    while not probe.exists():  # the daemon creates it: check the nearest existing parent
        probe = probe.parent
    if not probe.is_dir():
        return Result(FAIL, "database", f"{probe} is not a directory",
                      f"remove {probe} or choose another --db-dir")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".doctor-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return Result(FAIL, "database", f"{probe} is not writable: {e.strerror}",
                      f"make {d} writable by root, or choose another --db-dir")
    st = os.statvfs(probe)
    free_mb = st.f_bavail * st.f_frsize // (1024 * 1024)
    where = str(d) if probe == d else f"{d} (will be created in {probe})"
    if free_mb < LOW_FREE_MB:
        return Result(WARN, "database", f"{where} writable, only {free_mb} MiB free",
                      "free some space, or set rotate_size_mb, keep and min_free_mb")
    return Result(OK, "database", f"{where} writable, {free_mb} MiB free")


def check_sealing(state_dir: Path) -> Result:
    """What the daemon will do about sealing at its start (daemon/main.py, sealer_for): off
    without a state; with one it cannot read, off too (capture goes on, unsealed); a state
    others may read gives them the current key, which forges every seal from now on."""
    state_dir = Path(state_dir)
    if not seal.State.exists(state_dir):
        return Result(OK, "sealing", f"off: no sealing state in {state_dir} "
                      "(auditd-lite seal setup turns it on)")
    try:
        state = seal.State.load(state_dir)
    except seal.SealError as e:
        return Result(WARN, "sealing", f"{e}: the daemon will capture without sealing",
                      "auditd-lite seal setup --force begins a new key chain (keep its new key)")
    path = seal.State.path(state_dir)
    loose = [f"{p} is {oct(have)}, not {oct(want)}" for p, have, want in seal.State.loose_modes(state_dir)]
    last = state.recent[-1] if state.recent else None
    said = (f"on: key id {state.key_id}, next epoch {state.epoch}, epochs of "
            f"{timeparse.format_duration(state.interval_s * 10**9)}, "
            + (f"last seal at {timeparse.format_time(last['sealed_ns'])} ({last['reason']})"
               if last else "no seal made yet"))
    if loose:
        return Result(WARN, "sealing", f"{said}; but {'; '.join(loose)}: whoever read the "
                      "current key can forge the seals from its epoch on",
                      f"chmod {seal.DIR_MODE:o} {state_dir}; chmod {seal.FILE_MODE:o} {path} (the daemon also does at its "
                      "start); if others could read it, seal setup --force")
    return Result(OK, "sealing", said)


def resolve_settings(host: Host, config_file: Path | None, overrides: dict | None
                     ) -> tuple[Unit | None, DaemonSettings | None, Result]:
    """The unit and the daemon's settings, and the settings line; a bad config file or bad
    ExecStart flags are that line's failure, not a crash of every check that needs them."""
    unit = read_unit(host)
    try:
        ds = daemon_settings(host, unit, config_file, overrides)
    except AuditdLiteError as e:
        return unit, None, Result(FAIL, "settings", str(e),
                                  "fix the config file, the unit's ExecStart flags or doctor's flags")
    return unit, ds, check_settings(ds)


def run_checks(config_file: Path | None = None, overrides: dict | None = None,
               compile_test: bool = True, host: Host | None = None) -> list[Result]:
    host = host or Host()
    try:
        unit, ds, settings_line = resolve_settings(host, config_file, overrides)
    except Exception as e:  # an unreadable unit file, say: the checks that need none still run
        unit, ds = None, None
        settings_line = Result(FAIL, "settings", f"check failed: {type(e).__name__}: {e}")

    def db_dir() -> Path:
        given = (overrides or {}).get("db_dir")
        return ds.settings.db_dir if ds else given or config.DEFAULT_DB_DIR

    checks: list[tuple[str, Callable[[], Result]]] = [
        ("privileges", lambda: check_privileges(host)),
        ("kernel", lambda: check_kernel(host)),
        ("btf", lambda: check_btf(host)),
        ("tracefs", lambda: check_tracefs(host)),
        ("tracepoints", lambda: check_tracepoints(host, ds.settings if ds else None)),
        ("bcc", lambda: check_bcc(host)),
        ("headers", lambda: check_headers(host)),
        ("settings", lambda: settings_line),
        ("service", lambda: check_service(host, unit, ds) if ds
         else Result(SKIP, "service", "no settings to check it with")),
    ]
    loaded: dict = {}
    if compile_test:
        checks.append(("compile", lambda: check_compile(host, unit, ds, loaded) if ds
                       else Result(SKIP, "compile", "no settings to compile with")))
    checks.append(("capture", lambda: check_capture(host, ds, loaded) if ds
                   else Result(SKIP, "capture", "no settings to tell the mode with")))
    checks.append(("database", lambda: check_db_dir(db_dir())))
    checks.append(("sealing", lambda: check_sealing(ds.settings.seal_state) if ds
                   else Result(SKIP, "sealing", "no settings to find its state with")))
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as e:  # one broken check must not hide the others
            results.append(Result(FAIL, name, f"check failed: {type(e).__name__}: {e}"))
    return results


def main(config_file: Path | None = None, overrides: dict | None = None,
         compile_test: bool = True, out: TextIO | None = None, host: Host | None = None) -> int:
    results = run_checks(config_file, overrides, compile_test, host)
    failed = [r for r in results if r.status == FAIL]
    lines = [r.line() for r in results]
    if failed:
        lines.append(f"capture cannot work here: {len(failed)} check(s) failed "
                     f"({', '.join(r.name for r in failed)})")
    else:
        lines.append("capture can work on this host")
    if out is not None:
        out.write("\n".join(lines) + "\n")
        out.flush()
    return 1 if failed else 0
