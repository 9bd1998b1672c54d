"""What every guest of the VM tier must see of its boot (tests/vm/guest/boot_facts.sh writes
them, tests/vm/guest.sh runs it first in each guest of the matrix): one check, for the matrix."""

from __future__ import annotations

from pathlib import Path

import roots


def read_facts(path: Path) -> dict[str, str]:
    facts = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        facts[key] = value.strip()
    return facts


def check(kernel, abi: str, path: Path) -> None:
    """The kernel's guest booted as the guest tests rely on: its kernel, systemd as PID 1 and
    running (degraded passes, naming the failed units), BTF, the headers' build tree, the
    policy-rc.d left out, a writable root, the checkout, cgroup v2, its release's userland."""
    assert path.exists(), f"{kernel}: the guest wrote no boot facts ({path})"
    facts = read_facts(path)
    msg = f"{kernel}: facts {facts}"
    assert facts["uname"] == abi, msg
    assert facts["pid1"] == "systemd", msg
    assert facts["state"] in ("running", "degraded"), msg
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
