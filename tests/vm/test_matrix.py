"""The kernel matrix: every kernel of tests/vm/kernels.py booted under qemu
with systemd as PID 1, the package built from this tree installed in it, and
the kernel tests run there against the service (tests/vm/guest.sh). A kernel
that cannot be fetched or booted fails here with a sentence saying which,
never a skip."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import conftest
from conftest import REPO, build_deb

import kernels
import vm

pytestmark = pytest.mark.vm

GUEST = REPO / "tests/vm/guest.sh"
# boot, install (60-70 s under TCG), the service's start and the tests; a
# guest that takes longer than this is stuck
TIMEOUT_S = 1500
RESULTS = REPO / "build/vmtest"


@pytest.fixture(scope="module")
def deb() -> Path:
    return build_deb()


def junit_summary(path: Path) -> tuple[int, list[str]]:
    """(tests run, 'id: message' of each one that did not pass) from pytest's junit XML."""
    root = ET.parse(path).getroot()
    bad, total = [], 0
    for case in root.iter("testcase"):
        total += 1
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                msg = (el.get("message") or "").splitlines()[0][:300] if el.get("message") else kind
                bad.append(f"{case.get('classname')}::{case.get('name')} {kind}: {msg}")
    return total, bad


def expected_tests() -> int:
    """How many tests the guest's list names, as pytest collects them here (a guest that
    collected fewer ran less than it should, even if all of them passed)."""
    return conftest.count_collected([l for l in (REPO / "tests/vm/guest_tests.txt").read_text().splitlines()
                                     if l.strip() and not l.startswith("#")])


@pytest.mark.parametrize("kernel", kernels.KERNELS, ids=[k.name for k in kernels.KERNELS])
def test_kernel(kernel, deb):
    """On this Debian kernel under systemd: the package installs and starts, and every guest
    test passes against the service (none skipped, none missing)."""
    out = RESULTS / kernel.name
    # a junit.xml left by an earlier run must never stand for this one
    shutil.rmtree(out, ignore_errors=True)
    try:
        # x32 on (Debian builds it but leaves it off): tests/test_gate.py then sees its gate work
        res = vm.boot(kernel, GUEST, out, TIMEOUT_S, env={"VMTEST_DEB": str(deb)},
                      extra_cmdline="syscall.x32=y")
    except vm.VMError as e:
        pytest.fail(f"linux {kernel.name} ({kernel.suite}) could not be booted: {e}", pytrace=False)
    timings = {"kernel": kernel.name, "abi": res.abi, "accel": res.accel,
               "boot_s": res.boot_s, "guest_run_s": res.run_s, "total_s": round(res.total_s, 1),
               "retried_after_tcg_race": res.retried}
    try:
        timings.update(json.loads((out / "timings.json").read_text()))
    except (OSError, ValueError):
        pass
    (out / "summary.json").write_text(json.dumps(timings) + "\n")
    conftest.VM_SUMMARY.append(timings)
    assert not res.timed_out, f"linux {res.abi}: the guest did not finish in {TIMEOUT_S} s\n{res.describe()}"
    junit = out / "junit.xml"
    assert junit.exists(), f"linux {res.abi}: the guest ran no tests\n{res.describe()}"
    total, bad = junit_summary(junit)
    assert not bad, f"linux {res.abi}: {len(bad)} of {total} guest tests did not pass:\n" + "\n".join(bad)
    assert res.exit_status == 0, f"linux {res.abi}: guest script exit {res.exit_status}\n{res.describe()}"
    assert total == expected_tests(), f"linux {res.abi}: {total} guest tests ran, {expected_tests()} expected"
