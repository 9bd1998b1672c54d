"""Each kernel in kernels.py boots with systemd as PID 1 and gives a guest
what the guest-side tests rely on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kernels
import roots
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
    try:
        res = vm.boot(kernel, GUEST, tmp_path / "results", TIMEOUT_S, root=vm.guest_root(kernel))
    except vm.VMError as e:
        pytest.fail(f"{kernel} could not be booted: {e}", pytrace=False)
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
    # the userland is the kernel's release's when it names one (kernels.Kernel.root)
    if kernel.root is not None:
        number = roots.releases()[kernel.root]["number"]
        assert f"{number} ({kernel.root})" in facts["os"], msg


# the oops line of TCG's int3 race as the guest's kernel prints it (vm.TCG_RACE), then a
# panic: /proc/sysrq-trigger's crash panics whatever kernel.sysrq says
RACE_SCRIPT = "echo '<2>int3: 0000 [#1] PREEMPT SMP NOPTI' > /dev/kmsg; sleep 1; echo c > /proc/sysrq-trigger\n"
PANIC_SCRIPT = "echo c > /proc/sysrq-trigger\n"


@pytest.mark.skipif(vm.accel() != "tcg", reason="the retry is for TCG's race; kvm has none")
def test_race_is_retried_once(tmp_path):
    """A guest whose console shows TCG's int3 oops before it dies is booted once more, the
    first attempt's files moved aside; the second attempt's failure is returned as it is
    (no third boot)."""
    kernel = kernels.KERNELS[0]
    res = vm.boot(kernel, RACE_SCRIPT, tmp_path / "results", TIMEOUT_S)
    assert not res.ok and res.exit_status is None, res.describe()
    assert res.retried == str(tmp_path / "results" / "raced"), res.describe()
    assert vm.TCG_RACE.search((tmp_path / "results/raced/console.log").read_text(errors="replace"))
    # the second attempt's own files: its console shows the oops of its own death
    assert vm.TCG_RACE.search(res.console_log.read_text(errors="replace"))
    assert (res.results_dir / "qemu.cmd").exists() and not (res.results_dir / "raced/raced").exists()


@pytest.mark.skipif(vm.accel() != "tcg", reason="the retry is for TCG's race; kvm has none")
def test_other_panic_is_not_retried(tmp_path):
    """A guest that panics without TCG's int3 oops fails as it is: one boot, no retry."""
    kernel = kernels.KERNELS[0]
    res = vm.boot(kernel, PANIC_SCRIPT, tmp_path / "results", TIMEOUT_S)
    assert not res.ok and res.exit_status is None, res.describe()
    assert "Kernel panic" in res.console_log.read_text(errors="replace"), res.describe()
    assert res.retried is None
    assert not (tmp_path / "results/raced").exists()
