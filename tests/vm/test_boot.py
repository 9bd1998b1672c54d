"""The boot harness itself (vm.boot): TCG's int3 race retried once, any other panic not. That
each kernel boots with systemd as PID 1 and gives a guest what the guest tests rely on is
checked in each guest of the matrix (tests/vm/facts.py), which boots every kernel anyway."""

from __future__ import annotations

import os

import pytest

import kernels
import vm

pytestmark = pytest.mark.vm

TIMEOUT_S = float(os.environ.get("AUDITD_LITE_VM_TIMEOUT", "300"))


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
