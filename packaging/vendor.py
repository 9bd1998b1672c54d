"""What the Debian packages vendor, resolved from pyproject.toml for one release (build-deb.sh).

    python3 packaging/vendor.py plan RELEASE ARCH WHEELS_DIR > plan.json
    python3 packaging/vendor.py copyright LIBDIR DIST...   (Debian copyright stanzas)

`plan` resolves [project].dependencies and the lake extra together with pip (one consistent
set of versions, each wheel hash-checked against the index), for the release's python3 and C
library (packaging/releases.toml), and walks the requirements with the release's markers:
- a distribution in [tool.auditd-lite.debian].from-debian becomes a Depends on its Debian
  package (with the highest floor the requirements on it ask for), its own requirements not
  followed (Debian's package brings them);
- one in not-shipped is left out;
- every other one is vendored: its pure-Python wheel when the same version has one, else the
  wheel built for the release's Python (the package is then for that Python alone).
What the lake extra needs beyond the base set goes into auditd-lite-lake. The plan is JSON:
per package, the wheel files (downloaded into WHEELS_DIR), the Depends, whether anything is
compiled, and name, version and sha256 of each wheel.

Standard library, packaging (python3-packaging) and pip only: it runs under Debian's python3.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PIP = [sys.executable, "-m", "pip"]
# Debian's architecture -> the machine a wheel names
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


class VendorError(Exception):
    """One sentence for build-deb.sh to print."""


def releases() -> dict[str, dict]:
    return tomllib.loads((HERE / "releases.toml").read_text())


def release(name: str) -> dict:
    table = releases()
    if name not in table:
        raise VendorError(f"no release {name!r} in packaging/releases.toml (known: {', '.join(table)})")
    return {"name": name, **table[name]}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def platforms(rel: dict, arch: str) -> list[str]:
    """The manylinux tags the release's C library loads, newest first."""
    machine = MACHINES[arch]
    major, minor = map(int, rel["glibc"].split("."))
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{machine}"]


def marker_env(rel: dict, arch: str) -> dict[str, str]:
    env = default_environment()
    env.update(python_version=rel["python"], python_full_version=rel["python"] + ".0",
               implementation_name="cpython", platform_python_implementation="CPython",
               sys_platform="linux", os_name="posix", platform_system="Linux",
               platform_machine=MACHINES[arch])
    return env


def pip(*args: str, what: str) -> None:
    # the machine's pip settings (index, certificates, timeouts) stay in force
    p = subprocess.run([*PIP, *args], capture_output=True, text=True,
                       env={**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).splitlines()
                 if ln.strip() and "is ignored" not in ln] or ["(no output)"]
        err = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1])
        raise VendorError(f"{what}: {err.strip()}")


def target_args(rel: dict, arch: str, pure: bool) -> list[str]:
    if pure:
        plats = ["--platform", "any", "--implementation", "py"]
    else:
        plats = [a for tag in platforms(rel, arch) for a in ("--platform", tag)] + ["--implementation", "cp"]
    return ["--only-binary=:all:", "--python-version", rel["python"], *plats]


def resolve(rel: dict, arch: str, roots: list[str]) -> dict[str, dict]:
    """pip's resolution of roots for the release: canonical name -> report item."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip("install", "-q", "--dry-run", "--ignore-installed", "--report", str(report),
            "--target", str(Path(tmp) / "t"), *target_args(rel, arch, pure=False), *roots,
            what=f"cannot resolve the dependencies of pyproject.toml for {rel['name']} "
                 f"(Python {rel['python']})")
        items = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i for i in items}


def walk(roots: list[str], resolved: dict[str, dict], env: dict[str, str], debian: dict[str, str],
         not_shipped: dict[str, str], stop: set[str] = frozenset()) -> tuple[list[str], dict[str, SpecifierSet]]:
    """(vendored names, {from-debian name: combined specifiers}) reachable from roots."""
    vendored: list[str] = []
    from_debian: dict[str, SpecifierSet] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop(0)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name in debian:
            from_debian[name] = from_debian.get(name, SpecifierSet()) & req.specifier
            continue
        if name in not_shipped or name in stop or name in vendored:
            continue
        if name not in resolved:
            raise VendorError(f"{req} is required on Python {env['python_version']} but pip did not "
                              f"resolve it (pip evaluates markers for its own Python)")
        vendored.append(name)
        todo += [Requirement(r) for r in resolved[name]["metadata"].get("requires_dist") or []
                 if "extra ==" not in r]
    return vendored, from_debian


def pure(filename: str) -> bool:
    _, _, _, tags = parse_wheel_filename(filename)
    return all(t.abi == "none" and t.platform == "any" for t in tags)


def _cached(wheels: Path, name: str, version: str, want_pure: bool, rel: dict, arch: str) -> Path | None:
    want = canonicalize_name(name)
    for w in sorted(wheels.glob("*.whl")):
        wname, wver, _, _ = parse_wheel_filename(w.name)
        if canonicalize_name(wname) == want and str(wver) == version and pure(w.name) == want_pure \
                and (want_pure or _fits(w.name, rel, arch)):
            return w
    return None


def fetch_wheel(rel: dict, arch: str, wheels: Path, name: str, version: str) -> Path:
    """The wheel of name==version to vendor: its pure-Python wheel when there is one, else the
    one built for the release's Python. WHEELS_DIR is a cache: a second build asks the index
    nothing for a wheel it holds (nor again whether a pure one exists: a .nopure- marker)."""
    for want_pure in (True, False):
        hit = _cached(wheels, name, version, want_pure, rel, arch)
        if hit is not None:
            return hit
        nopure = wheels / f".nopure-{canonicalize_name(name)}-{version}"
        if want_pure and nopure.exists():
            continue
        try:
            pip("download", "-q", "--no-deps", "-d", str(wheels), *target_args(rel, arch, want_pure),
                f"{name}=={version}", what=f"cannot download {name} {version} for {rel['name']} "
                                           f"(Python {rel['python']})")
        except VendorError:
            if want_pure:
                nopure.touch()
                continue
            raise
        hit = _cached(wheels, name, version, want_pure, rel, arch)
        if hit is None:
            raise VendorError(f"pip downloaded no wheel of {name} {version} for {rel['name']} into {wheels}")
        return hit
    raise AssertionError("unreachable")


def _fits(filename: str, rel: dict, arch: str) -> bool:
    _, _, _, tags = parse_wheel_filename(filename)
    py = "cp" + rel["python"].replace(".", "")
    plats = set(platforms(rel, arch)) | {f"manylinux1_{MACHINES[arch]}", f"manylinux2010_{MACHINES[arch]}"}
    return any(t.platform in plats and (t.interpreter == py or t.abi == "abi3") for t in tags)


def plan(rel_name: str, arch: str, wheels: Path) -> dict:
    rel = release(rel_name)
    wheels = wheels.resolve()
    if arch not in MACHINES:
        raise VendorError(f"no wheel platform known for the Debian architecture {arch}")
    proj = project()
    base_roots = proj["project"]["dependencies"]
    lake_roots = proj["project"].get("optional-dependencies", {}).get("lake", [])
    deb = proj.get("tool", {}).get("auditd-lite", {}).get("debian", {})
    debian = {canonicalize_name(k): v for k, v in deb.get("from-debian", {}).items()}
    not_shipped = {canonicalize_name(k): v for k, v in deb.get("not-shipped", {}).items()}
    resolved = resolve(rel, arch, base_roots + lake_roots)
    env = marker_env(rel, arch)
    base, base_deb = walk(base_roots, resolved, env, debian, not_shipped)
    lake, lake_deb = walk(lake_roots, resolved, env, debian, not_shipped, stop=set(base))
    wheels.mkdir(parents=True, exist_ok=True)
    # what `pip install --target` needs to take wheels built for another Python than its own
    out = {"release": rel_name, "python": rel["python"], "number": rel["number"],
           "install_args": target_args(rel, arch, pure=False)}
    for pkg, names, from_deb in (("auditd-lite", base, base_deb), ("auditd-lite-lake", lake, lake_deb)):
        files = []
        for name in names:
            item = resolved[name]
            version = item["metadata"]["version"]
            w = fetch_wheel(rel, arch, wheels, name, version)
            files.append({"name": item["metadata"]["name"], "version": version, "wheel": str(w),
                          "pure": pure(w.name), "sha256": hashlib.sha256(w.read_bytes()).hexdigest()})
        depends = [f"{debian[n]} ({_floor(s)})" if _floor(s) else debian[n] for n, s in sorted(from_deb.items())]
        out[pkg] = {"wheels": files, "depends": depends,
                    "compiled": any(not f["pure"] for f in files)}
    return out


def _floor(spec: SpecifierSet) -> str:
    """The highest lower bound of spec as a Debian version relation ('>= 38'), or ''."""
    floors = [s.version for s in spec if s.operator in (">=", "==", "~=")]
    if not floors:
        return ""
    from packaging.version import Version
    return ">= " + max(floors, key=Version)


# ------------------------------------------------------------------ copyright


def _license(meta) -> str:
    expr = meta.get("License-Expression")
    if expr:
        return expr.strip()
    lic = (meta.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) < 60 and lic.upper() != "UNKNOWN":
        return lic
    found = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return " or ".join(found) or "see the licence files"


def copyright(libdir: Path, dists: list[str]) -> str:
    """A Debian copyright stanza per vendored distribution: its files, licence and licence files,
    read from its dist-info in libdir."""
    stanzas = []
    infos = {canonicalize_name(d.name.removesuffix(".dist-info").rsplit("-", 1)[0]): d for d in libdir.glob("*.dist-info")}
    for dist in dists:
        info = infos.get(canonicalize_name(dist))
        if info is None:
            raise VendorError(f"{dist} is not installed in {libdir}")
        meta = Parser().parsestr((info / "METADATA").read_text(errors="replace"))
        tops = set()
        for line in (info / "RECORD").read_text().splitlines():
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first and not first.endswith(".dist-info") and first != "..":
                tops.add(first)
        files = " ".join(f"usr/lib/auditd-lite/{t}" + ("/*" if (libdir / t).is_dir() else "")
                         for t in sorted(tops))
        licences = sorted(str(p.relative_to(libdir)) for p in info.rglob("*")
                          if p.is_file() and re.match(r"(?i)(licen[cs]e|copying|notice|authors)", p.name))
        who = meta.get("Author") or meta.get("Author-email") or meta.get("Maintainer") or meta["Name"] + " authors"
        stanzas.append(
            f"Files: {files}\nCopyright: {who.strip()} ({meta['Name']} {meta['Version']})\n"
            f"License: {_license(meta)}\n"
            + "".join(f" See /usr/lib/auditd-lite/{lic}\n" for lic in licences or ["(none shipped)"]))
    return "\n".join(stanzas)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["plan"] and len(argv) == 4:
            print(json.dumps(plan(argv[1], argv[2], Path(argv[3])), indent=1))
        elif argv[:1] == ["copyright"] and len(argv) >= 2:
            print(copyright(Path(argv[1]), argv[2:]), end="")
        elif argv[:1] == ["releases"]:
            print(" ".join(releases()))
        else:
            print(__doc__.strip().splitlines()[2], file=sys.stderr)
            return 2
    except VendorError as e:
        print(f"build-deb: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
