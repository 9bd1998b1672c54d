"""The kernel matrix: every kernel of tests/vm/kernels.py booted under qemu
with systemd as PID 1 on its root (this machine's, or its release's:
roots.vm_root), the packages built from this tree for that release installed
in it, and the kernel tests run there against the service with the release's
python3 (tests/vm/guest.sh). A kernel or root that cannot be fetched or booted
fails here with a sentence saying which, never a skip."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import conftest
from conftest import REPO, build_debs, build_gate32

import facts
import kernels
import vm

pytestmark = pytest.mark.vm

GUEST = REPO / "tests/vm/guest.sh"
# boot, install (60-70 s under TCG), the service's start and the tests; a
# guest that takes longer than this is stuck. 1500 s until 2026-12-06, when the
# trixie guest ran out of it twice at half its tests on this machine loaded by
# other engineers' guests and suites (load average 7 to 10 on 2 cores); 2400 s
# until 2026-12-07, when with fentry's compiles (a minute and more each) two
# guests beside the host suite took 2,300 s and more; three at once, the host quiet,
# installed the package in 9 to 15 minutes
TIMEOUT_S = 3300
RESULTS = REPO / "build/vmtest"
# Guests booted at once: all of them. A TCG guest keeps about one of this machine's two cores
# busy (clang, the tests' processes) and waits for much of its time: with two at a time the
# third started only when one ended, 25 to 35 minutes later (docs/vm.md, "Timings measured
# here"), and TimeoutStartSec leaves the starts room for a third guest's share of the cores.
GUESTS_AT_ONCE = 3


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


def guest_test_ids(kernel) -> list[str]:
    """The tests the kernel's guest runs: the lines of its lists (Kernel.test_lists)."""
    return [line for name in kernel.test_lists() for line in (REPO / "tests/vm" / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def expected_tests(kernel) -> int:
    """How many tests the guest's lists name, as pytest collects them here (a guest that
    collected fewer ran less than it should, even if all of them passed)."""
    return conftest.count_collected(guest_test_ids(kernel))


def run_guest(kernel, debs: dict[str, Path], root: Path | None):
    """Boot the kernel's guest (tests/vm/guest.sh) and wait for it: vm.boot's result."""
    out = RESULTS / kernel.name
    # a junit.xml left by an earlier run must never stand for this one
    shutil.rmtree(out, ignore_errors=True)
    return vm.boot(kernel, GUEST, out, TIMEOUT_S, root=root,
                   # auditd-lite alone: the lake (165 MiB to unpack and byte-compile under
                   # TCG) is installed and read back by the host and release tiers
                   env={"VMTEST_DEBS": str(debs["auditd-lite"]),
                        "VMTEST_TEST_LISTS": " ".join(kernel.test_lists())},
                   # x32 on (Debian builds it but leaves it off): tests/test_gate.py then
                   # sees its gate work
                   extra_cmdline="syscall.x32=y", cpus=kernel.cpus)


_prepared: dict[str, Future] = {}
_guests: dict[str, Future] = {}


def prepare_guests() -> None:
    """Make what every guest boots from, one kernel after another, in a thread of its own:
    its release's packages, its root (Debian 13's is a debootstrap and an apt install on a new
    machine), its kernel and initramfs; tests/test_gate.py's programs first. Started by
    conftest.pytest_collection_finish as the run begins, so that the host tests hide it; a
    guest boots once its own is made (guest). What goes wrong is the guest's failure."""
    if _prepared:
        return
    for k in kernels.KERNELS:
        _prepared[k.name] = Future()

    def prepare() -> None:
        try:
            build_gate32()  # where the guest sees them
        except BaseException as e:  # noqa: BLE001 - every guest fails with it
            for f in _prepared.values():
                f.set_exception(e)
            return
        for k in kernels.KERNELS:
            try:
                debs = build_debs(k.root)
                root = vm.guest_root(k, debs)
                vm.initramfs(vm.fetch(k))
            except BaseException as e:  # noqa: BLE001 - pytest.fail's too: the guest's test says it
                _prepared[k.name].set_exception(e)
                continue
            _prepared[k.name].set_result((debs, root))

    # a daemon thread: a run that ends first (-x, ^C) does not wait for downloads; what it
    # leaves half made, roots._build and vm.fetch clear at the next run
    threading.Thread(target=prepare, name="guest-prepare", daemon=True).start()


def _prepared_then_run(kernel):
    return run_guest(kernel, *_prepared[kernel.name].result())


def guest(kernel) -> Future:
    """The kernel's guest run: on the first call every guest is submitted, GUESTS_AT_ONCE at a
    time, each booting as soon as what it boots from is made (prepare_guests)."""
    if not _guests:
        prepare_guests()  # already begun unless this run's collection did not see the tier
        pool = ThreadPoolExecutor(GUESTS_AT_ONCE, thread_name_prefix="guest")
        for k in kernels.KERNELS:
            _guests[k.name] = pool.submit(_prepared_then_run, k)
        pool.shutdown(wait=False)
    return _guests[kernel.name]


@pytest.mark.parametrize("kernel", kernels.KERNELS, ids=[k.name for k in kernels.KERNELS])
def test_kernel(kernel):
    """On this Debian kernel under systemd, on its release's root: the guest booted as the
    guest tests rely on (facts.check), the packages install and the service starts, and every
    guest test passes against the service (none skipped, none missing)."""
    out = RESULTS / kernel.name
    try:
        res = guest(kernel).result()
    except vm.VMError as e:
        pytest.fail(f"linux {kernel.name} ({kernel.suite}) could not be booted: {e}", pytrace=False)
    timings = {"kernel": kernel.name, "root": kernel.root or "host", "abi": res.abi, "accel": res.accel,
               "boot_s": res.boot_s, "guest_run_s": res.run_s, "total_s": round(res.total_s, 1),
               "retried_after_tcg_race": res.retried}
    try:
        timings.update(json.loads((out / "timings.json").read_text()))
    except (OSError, ValueError):
        pass
    (out / "summary.json").write_text(json.dumps(timings) + "\n")
    conftest.VM_SUMMARY.append(timings)
    assert not res.timed_out, f"linux {res.abi}: the guest did not finish in {TIMEOUT_S} s\n{res.describe()}"
    facts.check(kernel, res.abi, out / "facts")
    junit = out / "junit.xml"
    assert junit.exists(), f"linux {res.abi}: the guest ran no tests\n{res.describe()}"
    total, bad = junit_summary(junit)
    assert not bad, f"linux {res.abi}: {len(bad)} of {total} guest tests did not pass:\n" + "\n".join(bad)
    assert res.exit_status == 0, f"linux {res.abi}: guest script exit {res.exit_status}\n{res.describe()}"
    assert total == expected_tests(kernel), \
        f"linux {res.abi}: {total} guest tests ran, {expected_tests(kernel)} expected"
