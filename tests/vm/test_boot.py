"""Each kernel in kernels.py boots with systemd as PID 1 and gives a guest
what the guest-side tests rely on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kernels
import vm

pytestmark = pytest.mark.vm

GUEST = Path(__file__).resolve().parent / "guest" / "boot_facts.sh"
TIMEOUT_S = float(os.environ.get("AUDITD_LITE_VM_TIMEOUT", "300"))


def read_facts(path: Path) -> dict[str, str]:
    facts = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        facts[key] = value.strip()
    return facts


@pytest.mark.parametrize("kernel", kernels.KERNELS, ids=lambda k: k.name)
def test_boot(kernel, tmp_path, record_property):
    res = vm.boot(kernel, GUEST, tmp_path / "results", TIMEOUT_S)
    record_property("boot_s", res.boot_s)
    record_property("total_s", res.total_s)
    print(f"{kernel}: {res.abi} accel={res.accel} unit start {res.boot_s} s, "
          f"total {res.total_s:.1f} s, console {res.console_log}")
    assert res.ok, res.describe()
    facts = read_facts(res.results_dir / "facts")
    print(facts)
    msg = f"{kernel}: facts {facts}; console {res.console_log}"
    assert facts["uname"] == res.abi, msg
    assert facts["pid1"] == "systemd", msg
    assert facts["state"] in ("running", "degraded"), msg
    # degraded passes the boot, but names the failed units in the report
    if facts["state"] == "degraded":
        print(f"{kernel}: degraded, failed units: {facts['failed']}")
    assert facts["btf"] == "yes", msg
    assert facts["build_include"] == "yes", msg
    assert facts["perf_event_paranoid"].lstrip("-").isdigit(), msg
    assert facts["policy_rc_d"] == "absent", msg
    assert facts["write"] == "ok", msg
    assert facts["repo"] == "yes", msg
    assert facts["cgroup"] == "cgroup2fs", msg
