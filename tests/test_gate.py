"""Kernel tests: the system call gate an exec came through (issue #20).

A 64-bit program calling execve through int $0x80 (i386 number 11) is the
classic way around audit rules that list only arch=b64; every exec attempt
means every ABI. tests/programs/gate32.c makes those calls and prints what
the kernel returned; each record is held to that and to the argv it passed.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import REPO, query_json

pytestmark = pytest.mark.kernel
# every test that takes `capture` runs in each of conftest.CAPTURE_MODES
EACH_CAPTURE_MODE = True

SOURCE = REPO / "tests/programs/gate32.c"
# no libc, one source for both: the i386 build needs no 32-bit libc on the machine
CFLAGS = ["-O1", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector"]


@pytest.fixture(scope="module")
def gate32(tmp_path_factory) -> dict[str, Path]:
    """gate32.c built as a 64-bit program and as an i386 one (a real 32-bit binary)."""
    out = tmp_path_factory.mktemp("gate32")
    out.chmod(0o755)
    built = {}
    for name, extra in (("x64", []), ("i386", ["-m32", "-fno-pic"])):
        path = out / f"gate32-{name}-{uuid.uuid4().hex[:6]}"
        p = subprocess.run(["gcc", *CFLAGS, *extra, "-o", str(path), str(SOURCE)],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"gcc could not build the {name} gate32: {p.stderr[-2000:]}"
        built[name] = path
    return built


def returned(p: subprocess.CompletedProcess) -> int:
    """What the kernel returned to gate32's int $0x80 call, as it printed it."""
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    line = p.stdout.decode().strip()
    assert line.startswith("gate32 returned "), line
    return int(line.rsplit(" ", 1)[1])


def one(records: list[dict], **match) -> dict:
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, records)
    return found[0]


# every way through int $0x80: both calls, from a 64-bit program and from a real i386 one
VARIANTS = [(build, call) for build in ("x64", "i386") for call in ("execve", "execveat")]


def test_exec_through_int80_is_recorded_with_its_abi(capture, gate32, marker):
    """A program (64-bit, or a real i386 one) that execs through int $0x80 with execve or
    execveat: each exec is recorded under its pid with abi ia32 and the argv it passed, and the
    exec of the gate program itself, through the 64-bit gate from Popen, with abi x64."""
    ran = {}
    for build, call in VARIANTS:
        tag = uuid.uuid4().hex
        p = subprocess.Popen([str(gate32[build]), call, str(marker), "via int80", tag],
                             stdout=subprocess.PIPE)
        out, _ = p.communicate()
        assert p.returncode == 0 and out == b"", out  # gate32 printed nothing: its exec succeeded
        ran[(build, call)] = (p.pid, tag)
    capture.flush()
    for (build, call), (pid, tag) in ran.items():
        execs = query_json(capture.db_dir, "--pid", pid, "--event", "exec")
        got = one(execs, filename=str(marker))
        assert (got["abi"], got["argv"]) == ("ia32", [str(marker), "via int80", tag]), (build, call)
        assert one(execs, filename=str(gate32[build]))["abi"] == "x64"
    found = query_json(capture.db_dir, "--abi", "ia32", "--filename", str(marker))
    assert sorted(r["pid"] for r in found) == sorted(pid for pid, _ in ran.values() for _ in ("exec", "exit"))


def test_failed_exec_through_int80_is_recorded_with_its_errno(capture, gate32):
    """A failed exec through int $0x80 (a path that does not exist), each way: an exec_failed
    record with abi ia32, the errno the program saw returned (ENOENT), the filename and the
    argv; none of them under abi x64."""
    missing = {v: f"/nonexistent/{uuid.uuid4().hex}" for v in VARIANTS}
    for (build, call), path in missing.items():
        p = subprocess.run([str(gate32[build]), call, path, "first arg", "-x"], capture_output=True)
        assert returned(p) == -2
    capture.flush()
    for variant, path in missing.items():
        rec = one(query_json(capture.db_dir, "--event", "exec_failed", "--filename", path), filename=path)
        assert (rec["abi"], rec["errno"], rec["errno_name"]) == ("ia32", 2, "ENOENT"), variant
        assert rec["argv"] == [path, "first arg", "-x"]
        assert query_json(capture.db_dir, "--abi", "x64", "--filename", path) == []


def test_native_exec_and_failure_are_x64(capture, marker):
    """An exec and a failed exec through the 64-bit gate (Python's posix_spawn) say abi x64, and
    query --abi ia32 finds neither."""
    tag = uuid.uuid4().hex
    subprocess.run([str(marker), tag], check=True)
    missing = f"/nonexistent/{tag}"
    with pytest.raises(FileNotFoundError):
        subprocess.run([missing, tag])
    capture.flush()
    got = {(r["event"], r["abi"]) for r in query_json(capture.db_dir, "--arg", tag)}
    assert got == {("exec", "x64"), ("exit", "x64"), ("exec_failed", "x64")}
    assert query_json(capture.db_dir, "--arg", tag, "--abi", "ia32") == []


def test_x32_gate(capture, gate32, marker):
    """An exec through the x32 ABI (syscall with __X32_SYSCALL_BIT, 32-bit pointers), with
    execve and with execveat. Where the kernel runs x32 (the VM guests boot with
    syscall.x32=y), each exec is recorded with abi x32 and its argv. Where it does not (ENOSYS,
    as this host's kernel answers), the raw_syscalls fallback records each attempt with abi x32
    and errno ENOSYS, and fentry sees nothing: the call never reaches the execve function
    (docs/design.md, "Hooking execve, not every system call")."""
    ran = {}
    for call in ("x32-execve", "x32-execveat"):
        tag = uuid.uuid4().hex
        p = subprocess.Popen([str(gate32["x64"]), call, str(marker), "via x32", tag], stdout=subprocess.PIPE)
        out, _ = p.communicate()
        ran[call] = (p, out, tag)
    capture.flush()
    for call, (p, out, tag) in ran.items():
        recs = query_json(capture.db_dir, "--arg", tag, "--abi", "x32")
        if out == b"":  # the exec succeeded: marker ran and printed nothing
            assert p.returncode == 0
            got = one(recs, event="exec")
            assert (got["pid"], got["filename"], got["argv"]) == (p.pid, str(marker), [str(marker), "via x32", tag])
            continue
        assert returned(subprocess.CompletedProcess(p.args, p.returncode, out)) == -38  # ENOSYS: no x32
        if capture.mode == "raw_syscalls":
            failed = one(recs, event="exec_failed")
            assert (failed["errno_name"], failed["filename"], failed["argv"]) == (
                "ENOSYS", str(marker), [str(marker), "via x32", tag]), call
        else:
            assert capture.mode == "fentry" and recs == [], call
