"""The Debian kernels the VM tier boots: one line each.

The concrete ABI (6.1.0-57-amd64, ...) is not written here: it is resolved
when the kernel is fetched, from the suite's linux-image-amd64 and
linux-headers-amd64 metapackages, because the archive moves on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kernel:
    # short name, used in test ids and cache paths
    name: str
    # Debian suite whose metapackages pick the kernel
    suite: str
    # a release suite (bookworm) also reads its -security and -updates
    # pockets, which is where that release's current kernel lives (what an
    # installed Debian runs); False takes the kernel of the last point release
    security: bool = True
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    flavour: str = "amd64"
    # the guest's root: a release of packaging/releases.toml (tests/vm/roots.py builds it),
    # for the kernel that release runs; None boots this machine's own root
    root: str | None = None
    # the lists of tests/vm/ its guest runs after guest_tests.txt (what depends on the kernel,
    # every guest): guest_variant_tests.txt and guest_loss_tests.txt on the oldest kernel,
    # guest_claims_tests.txt on the newest, guest_userland_tests.txt on one kernel of each root
    # (the root's systemd and the package as installed, the same under any kernel)
    lists: tuple[str, ...] = ()
    # the guest's vCPUs. One unless the kernel's guest must show what only CPUs running at once
    # do (threads that die together on two CPUs: docs/design.md, "Exactly one exit per
    # process"): under TCG with three guests on this machine's two cores, a second vCPU made
    # each guest a third slower (docs/vm.md, "Timings measured here")
    cpus: int = 1

    def test_lists(self) -> list[str]:
        """The files of tests/vm/ whose tests this kernel's guest runs, in order."""
        return ["guest_tests.txt", *self.lists]

    def __str__(self) -> str:
        return f"linux {self.name} ({self.suite})"

    def sources(self) -> list[tuple[str, str]]:
        """(mirror, suite) pairs for this kernel's private apt sources."""
        pairs = [(self.mirror, self.suite)]
        if self.security and "-" not in self.suite:
            pairs.append((self.mirror, f"{self.suite}-updates"))
            pairs.append((self.security_mirror, f"{self.suite}-security"))
        return pairs


KERNELS = [
    # on this machine's root (Debian 12), whose userland 6.1's guest checks
    Kernel("5.10", suite="bullseye", lists=("guest_variant_tests.txt", "guest_loss_tests.txt")),
    # two vCPUs: the kernel whose threads, dying together, were each recorded as the process's
    # exit (26 of 200 processes before the claims) shows on every run that the claims hold
    Kernel("6.1", suite="bookworm", lists=("guest_userland_tests.txt",), cpus=2),
    # Debian 13's own kernel on Debian 13's userland, systemd and python3 (it replaced
    # bookworm-backports' 6.12 on Debian 12's: the same kernel line, docs/vm.md)
    Kernel("6.12-trixie", suite="trixie", root="trixie",
           lists=("guest_claims_tests.txt", "guest_userland_tests.txt")),
]


def by_name(name: str) -> Kernel:
    for k in KERNELS:
        if k.name == name:
            return k
    raise KeyError(f"no kernel named {name!r} in tests/vm/kernels.py "
                   f"(known: {', '.join(k.name for k in KERNELS)})")
