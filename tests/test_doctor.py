"""`auditd-lite doctor`: each check against fake host files, and the real command on this host."""

from __future__ import annotations

import io
import os
import resource
import struct
import subprocess
import sys

import pytest

from auditd_lite.capture import btf, doctor, loader
import auditd_lite.capture.doctor.load  # noqa: F401 - doctor.load, where tests patch load_plan
from auditd_lite import config, seal
from auditd_lite.capture.doctor.host import FAIL, OK, SKIP, WARN, Host
from conftest import REPO, run_cli
from test_btf import BlobBuilder

ALL_CAPS = "000001ffffffffff"
ALL_CAPS_INT = int(ALL_CAPS, 16)
SERVICE_CAPS = ((1 << doctor.host.CAP_BPF) | (1 << doctor.host.CAP_PERFMON) | (1 << doctor.host.CAP_SYS_PTRACE)
                | (1 << doctor.host.CAP_DAC_READ_SEARCH))
UNIT_TEXT = (REPO / "auditd-lite.service").read_text()
# every raw tracepoint the program may attach, by tracefs category
ALL_EVENTS = ("raw_syscalls/sys_enter", "raw_syscalls/sys_exit", "sched/sched_process_exec",
              "sched/sched_process_exit", "sched/sched_process_free")
WITH_GROUP_DEAD = {"sys_enter": [8, 8], "sys_exit": [8, 8], "sched_process_exec": [8, 4, 8],
                   "sched_process_exit": [8, 1], "sched_process_free": [8]}


def btf_blob(tracepoints: dict[str, list[int]]) -> bytes:
    """A BTF blob declaring each raw tracepoint as the kernel does: a typedef
    btf_trace_<event> of a pointer to a prototype (void *data, args...)."""
    b = BlobBuilder()
    ints = {size: b.int_(f"u{size * 8}", size) for size in (1, 4, 8)}
    void_ptr = b.ptr(0)
    for event, sizes in tracepoints.items():
        params = [void_ptr] + [ints[size] for size in sizes]
        extra = b"".join(struct.pack("<II", 0, t) for t in params)
        proto = b.add("", btf.KIND_FUNC_PROTO, len(params), 0, extra)
        b.typedef(f"btf_trace_{event}", b.ptr(proto))
    return b.blob()


def fake_host(tmp_path, release="6.18.2-test", caps=ALL_CAPS, events=ALL_EVENTS,
              headers_for="6.18.2-test", btf_tracepoints=None, btf_junk=True, euid=0,
              unit=None, lib_unit=None, dropins=None, lib_dropins=None, repo_unit=None,
              paranoid=2, group_dead=True, setpriv="/usr/bin/setpriv") -> Host:
    """A host made of files under tmp_path: /proc status, tracefs, module tree, BTF (a blob
    with the given raw tracepoints, junk, or none), the unit in /etc and /lib with drop-ins,
    perf_event_paranoid and the default config file (absent)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    status = tmp_path / "status"
    status.write_text(f"Name:\tx\nCapEff:\t{caps}\nCapBnd:\t{caps}\n")
    tracefs = tmp_path / "tracing"
    if events is not None:
        (tracefs / "events").mkdir(parents=True)
        for event in events:
            (tracefs / "events" / event).mkdir(parents=True)
        exit_dir = tracefs / "events" / "sched" / "sched_process_exit"
        if exit_dir.is_dir():
            exit_dir.joinpath("format").write_text(
                "\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n"
                + ("\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n" if group_dead else ""))
    modules = tmp_path / "modules"
    if headers_for:
        build = modules / release / "build"
        (build / "include" / "config").mkdir(parents=True)
        (build / "include" / "config" / "kernel.release").write_text(headers_for + "\n")
    btf_path = tmp_path / "vmlinux"
    if btf_tracepoints is not None:
        btf_path.write_bytes(btf_blob(btf_tracepoints))
    elif btf_junk:
        btf_path.write_bytes(b"not really BTF")
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    for d, text, drops in ((etc, unit, dropins), (lib, lib_unit, lib_dropins)):
        (d / "auditd-lite.service.d").mkdir(parents=True)
        if text is not None:
            (d / "auditd-lite.service").write_text(text)
        for name, dropin in (drops or {}).items():
            (d / "auditd-lite.service.d" / name).write_text(dropin)
    paranoid_file = tmp_path / "perf_event_paranoid"
    if paranoid is not None:
        paranoid_file.write_text(f"{paranoid}\n")
    if repo_unit is not None:
        (tmp_path / "repo.service").write_text(repo_unit)
    return Host(release=release, proc_status=str(status), btf_path=str(btf_path),
                tracefs=(str(tracefs),), modules=str(modules), kheaders=str(tmp_path / "nokh"),
                euid=euid, unit_files=(str(etc / "auditd-lite.service"), str(lib / "auditd-lite.service")),
                dropin_dirs=(str(etc / "auditd-lite.service.d"), str(lib / "auditd-lite.service.d")),
                repo_unit=str(tmp_path / "repo.service"), perf_event_paranoid=str(paranoid_file),
                default_config=str(tmp_path / "auditd-lite.toml"), setpriv=setpriv)


def unit_with(caps_line: str | None = "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_PTRACE "
                                     "CAP_DAC_READ_SEARCH",
              exec_start="/usr/bin/auditd-lite run", extra="") -> str:
    lines = ["[Unit]", "Description=test", "[Service]", f"ExecStart={exec_start}"]
    if caps_line is not None:
        lines.append(caps_line)
    return "\n".join(lines) + "\n" + extra


def service(host, **overrides):
    unit = doctor.read_unit(host)
    return doctor.check_service(host, unit, doctor.daemon_settings(host, unit, overrides=overrides))


class TestChecks:
    def test_tracefs_absent_with_btf_is_fine(self, tmp_path):
        """No tracefs but BTF: ok, saying tracefs is only needed without BTF; the tracepoints
        are still checked, from BTF."""
        host = fake_host(tmp_path, events=None, btf_tracepoints=WITH_GROUP_DEAD)
        r = doctor.check_tracefs(host)
        assert r.status == OK and "only needed on kernels without BTF" in r.message
        assert doctor.check_tracepoints(host).status == OK

    def test_tracefs_absent_without_btf_warns(self, tmp_path):
        """No tracefs and no BTF: a warning with the mount command, and the tracepoint check
        skipped for want of anywhere to look."""
        host = fake_host(tmp_path, events=None, btf_junk=False)
        r = doctor.check_tracefs(host)
        assert r.status == WARN and r.fix == "mount -t tracefs tracefs /sys/kernel/tracing"
        assert "-> fix: mount -t tracefs tracefs /sys/kernel/tracing" in r.line()
        assert doctor.check_tracepoints(host).status == SKIP

    def test_missing_raw_tracepoint_is_named_from_btf(self, tmp_path):
        """A kernel whose BTF lacks sched_process_exec fails, naming exactly that one, even
        with tracefs listing it (BTF is what is asked first)."""
        tps = {k: v for k, v in WITH_GROUP_DEAD.items() if k != "sched_process_exec"}
        r = doctor.check_tracepoints(fake_host(tmp_path, btf_tracepoints=tps))
        assert r.status == FAIL and r.message == "missing in BTF: sched_process_exec"

    def test_four_raw_tracepoints_with_group_dead(self, tmp_path):
        """Where sched_process_exit passes group_dead, the four RAW_TRACEPOINTS are wanted and
        listed, and sched_process_free is not."""
        r = doctor.check_tracepoints(fake_host(tmp_path, btf_tracepoints=WITH_GROUP_DEAD))
        assert r.status == OK
        assert r.message == ("all 4 raw tracepoints present in BTF: "
                             + ", ".join(loader.RAW_TRACEPOINTS))

    def test_claim_tracepoint_wanted_without_group_dead(self, tmp_path):
        """Without group_dead the program also attaches sched_process_free: a BTF without it
        fails naming it; with it, all five are listed."""
        tps = {**WITH_GROUP_DEAD, "sched_process_exit": [8]}
        del tps["sched_process_free"]
        r = doctor.check_tracepoints(fake_host(tmp_path / "a", btf_tracepoints=tps))
        assert r.status == FAIL and r.message == "missing in BTF: sched_process_free"
        tps["sched_process_free"] = [8]
        r = doctor.check_tracepoints(fake_host(tmp_path / "b", btf_tracepoints=tps))
        assert r.status == OK and r.message.startswith("all 5 raw tracepoints")
        assert r.message.endswith(", sched_process_free")

    def test_tracepoints_from_tracefs_without_btf(self, tmp_path):
        """Without BTF the tracepoints are looked for as tracefs events/<category>/<event>:
        a missing raw_syscalls/sys_exit is named; without group_dead in the exit format,
        sched/sched_process_free is wanted too."""
        events = [e for e in ALL_EVENTS if e != "raw_syscalls/sys_exit"]
        host = fake_host(tmp_path / "a", events=events)
        r = doctor.check_tracepoints(host)
        assert r.status == FAIL and r.message == f"missing in {host.tracefs[0]}/events: sys_exit"
        events = [e for e in ALL_EVENTS if e != "sched/sched_process_free"]
        r = doctor.check_tracepoints(fake_host(tmp_path / "b", events=events, group_dead=False))
        assert r.status == FAIL and r.message.endswith("sched_process_free")
        r = doctor.check_tracepoints(fake_host(tmp_path / "c", events=events, group_dead=True))
        assert r.status == OK and r.message.startswith("all 4 raw tracepoints")

    def test_headers_for_another_kernel_are_fine_with_btf(self, tmp_path):
        """Headers made for another kernel: OK, saying the offsets come from BTF."""
        r = doctor.check_headers(fake_host(tmp_path, headers_for="6.1.0-56-amd64"))
        assert r.status == OK
        assert "made for 6.1.0-56-amd64, not the running 6.18.2-test" in r.message
        assert "field offsets come from BTF" in r.message

    def test_headers_for_another_kernel_without_btf_warn(self, tmp_path):
        """Mismatched headers and no BTF: a warning that recorded fields may be wrong."""
        r = doctor.check_headers(fake_host(tmp_path, headers_for="6.1.0-56-amd64", btf_junk=False))
        assert r.status == WARN and "may be wrong" in r.message

    def test_matching_headers(self, tmp_path):
        """Headers made for the running kernel are reported as such."""
        r = doctor.check_headers(fake_host(tmp_path))
        assert r.status == OK and "made for the running kernel" in r.message

    def test_debian_headers_named_by_uts_release(self, tmp_path):
        """Debian's headers: kernel.release holds the upstream version (6.1.192), utsrelease.h
        the release uname -r gives (6.1.0-57-amd64); they are the running kernel's."""
        host = fake_host(tmp_path, release="6.1.0-57-amd64", headers_for="6.1.192")
        gen = tmp_path / "modules" / "6.1.0-57-amd64" / "build" / "include" / "generated"
        gen.mkdir()
        (gen / "utsrelease.h").write_text('#define UTS_RELEASE "6.1.0-57-amd64"\n')
        r = doctor.check_headers(host)
        assert r.status == OK and "made for the running kernel" in r.message, r

    def test_no_headers(self, tmp_path):
        """No headers at all: FAIL, with the package to install."""
        r = doctor.check_headers(fake_host(tmp_path, headers_for=None))
        assert r.status == FAIL and "apt-get install linux-headers-6.18.2-test" in r.fix

    @pytest.mark.parametrize("release,status", [
        ("6.18.44-fc-v657", OK), ("5.8.0", OK), ("5.7.19", WARN), ("5.4.0-150-generic", FAIL)])
    def test_kernel_version(self, tmp_path, release, status):
        """5.8+ is fine, 5.5 to 5.7 needs perfbuf, older cannot run the program."""
        r = doctor.check_kernel(fake_host(tmp_path, release=release))
        assert r.status == status
        if status == WARN:
            assert "perfbuf" in r.fix

    def test_root_without_bpf_caps(self, tmp_path):
        """Root whose capabilities lack CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN fails, naming them."""
        caps = f"{(1 << 19):016x}"  # CAP_SYS_PTRACE only
        r = doctor.check_privileges(fake_host(tmp_path, caps=caps))
        assert r.status == FAIL and "CAP_BPF, CAP_PERFMON" in r.message

    def test_without_ptrace_is_a_warning(self, tmp_path):
        """CAP_BPF and CAP_PERFMON without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: capture
        works, seeding and hashing are poorer, and the warning names both; with both, OK."""
        caps = f"{(1 << 38) | (1 << 39):016x}"
        r = doctor.check_privileges(fake_host(tmp_path, caps=caps))
        assert r.status == WARN and r.fix == "add CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
        assert "running at start" in r.message and "hash as unreadable" in r.message
        r = doctor.check_privileges(fake_host(tmp_path / "all", caps=f"{SERVICE_CAPS:016x}"))
        assert r.status == OK

    def test_not_root(self, tmp_path):
        """A non-root user fails the privileges check with the way to run it."""
        r = doctor.check_privileges(fake_host(tmp_path, euid=1000))
        assert r.status == FAIL and "uid 1000" in r.message and "sudo" in r.fix

    def test_database_dir(self, tmp_path):
        """A writable directory passes with its free space; a path under a file fails."""
        ok = doctor.check_db_dir(tmp_path / "db")
        assert ok.status == OK and "MiB free" in ok.message and "will be created" in ok.message
        (tmp_path / "afile").write_text("")
        bad = doctor.check_db_dir(tmp_path / "afile" / "db")
        assert bad.status == FAIL and "not a directory" in bad.message

    def test_sealing(self, tmp_path):
        """No state: sealing off, ok. A state seal setup made: on, with its key id, epoch and
        epoch length. Its file readable by others: a warning naming it and the chmod. A state
        that does not parse: a warning that the daemon will not seal."""
        state = tmp_path / "seal"
        off = doctor.check_sealing(state)
        assert off.status == OK and off.message.startswith("off: no sealing state in")
        key = seal.setup(state, 120)
        on = doctor.check_sealing(state)
        assert on.status == OK, on.line()
        assert on.message == (f"on: key id {key.id}, next epoch 0, epochs of 2m00s, "
                              "no seal made yet")
        path = seal.State.path(state)
        path.chmod(0o644)
        loose = doctor.check_sealing(state)
        assert loose.status == WARN and f"{path} is 0o644, not 0o600" in loose.message
        assert f"chmod 600 {path}" in loose.fix
        path.chmod(0o600)
        path.write_text("{not json")
        broken = doctor.check_sealing(state)
        assert broken.status == WARN and "the daemon will capture without sealing" in broken.message

    def test_unusable_btf_is_a_warning(self, tmp_path):
        """A BTF file that does not parse is a warning about header layouts, not a crash."""
        r = doctor.check_btf(fake_host(tmp_path))
        assert r.status == WARN and "CONFIG_DEBUG_INFO_BTF" in r.fix


class TestUnit:
    def test_bounding_set_of_the_installed_unit(self, tmp_path):
        """The shipped unit's CapabilityBoundingSet, installed in /etc, reads as exactly
        CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, with its
        LimitMEMLOCK=infinity."""
        u = doctor.read_unit(fake_host(tmp_path, unit=UNIT_TEXT))
        assert u.installed and u.files == [str(tmp_path / "etc" / "auditd-lite.service")]
        assert u.caps == SERVICE_CAPS
        assert u.memlock == (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        assert u.run_flags() == []

    def test_dropins_apply_as_systemd_merges_them(self, tmp_path):
        """Drop-ins apply in file-name order: a second CapabilityBoundingSet= adds to the set,
        ~ takes away, and an empty one resets it."""
        host = fake_host(tmp_path / "add", unit=UNIT_TEXT, dropins={
            "20-admin.conf": "[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN\n",
            "30-noptrace.conf": "[Service]\nCapabilityBoundingSet=~CAP_SYS_PTRACE\n"})
        u = doctor.read_unit(host)
        assert u.caps == SERVICE_CAPS - (1 << doctor.host.CAP_SYS_PTRACE) + (1 << doctor.host.CAP_SYS_ADMIN)
        assert len(u.files) == 3 and u.files[1].endswith("20-admin.conf")
        host = fake_host(tmp_path / "reset", unit=UNIT_TEXT, dropins={
            "10-reset.conf": "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=cap_bpf\n"})
        assert doctor.read_unit(host).caps == 1 << doctor.host.CAP_BPF

    def test_etc_hides_lib(self, tmp_path):
        """The unit in /etc replaces the one in /lib whole, and a drop-in in /etc hides one of
        the same name in /lib while other /lib drop-ins still apply."""
        host = fake_host(tmp_path, unit=unit_with("CapabilityBoundingSet=CAP_BPF"),
                         lib_unit=UNIT_TEXT,
                         dropins={"caps.conf": "[Service]\nCapabilityBoundingSet=CAP_PERFMON\n"},
                         lib_dropins={"caps.conf": "[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN\n",
                                      "more.conf": "[Service]\nCapabilityBoundingSet=CAP_KILL\n"})
        u = doctor.read_unit(host)
        assert u.caps == (1 << doctor.host.CAP_BPF) | (1 << doctor.host.CAP_PERFMON) | (1 << 5)
        assert [os.path.basename(f) for f in u.files] == ["auditd-lite.service", "caps.conf", "more.conf"]

    def test_repository_copy_when_not_installed(self, tmp_path):
        """No installed unit: the repository's copy is read and reported as not installed;
        without that either, no unit at all."""
        host = fake_host(tmp_path / "a", repo_unit=UNIT_TEXT)
        u = doctor.read_unit(host)
        assert not u.installed and u.caps == SERVICE_CAPS
        assert "not installed" in u.where()
        assert doctor.read_unit(fake_host(tmp_path / "b")) is None

    @pytest.mark.parametrize("text,expected", [
        ("infinity", (-1, -1)), ("8M", (8 << 20, 8 << 20)), ("64K:1G", (64 << 10, 1 << 30)),
        ("4096", (4096, 4096)), ("lots", None)])
    def test_limit_values(self, text, expected):
        """LimitMEMLOCK= values as systemd reads them: powers of 1024, soft:hard, infinity;
        a value it cannot read gives None."""
        assert doctor.unit.parse_limit(text) == expected


class TestSettings:
    def test_exec_start_flags_and_config_file(self, tmp_path):
        """The daemon's settings are the config file named by ExecStart's --config, then the
        ExecStart flags: transport from the file, buffer_kb from the flags."""
        cfg = tmp_path / "custom.toml"
        cfg.write_text('transport = "perfbuf"\nbuffer_kb = 1024\nmax_args = 64\n')
        host = fake_host(tmp_path / "h", unit=unit_with(
            exec_start=f"/usr/bin/auditd-lite run --config {cfg} --buffer-kb 256"))
        ds = doctor.daemon_settings(host, doctor.read_unit(host))
        s = ds.settings
        assert (s.transport, s.buffer_kb, s.max_args) == ("perfbuf", 256, 64)
        assert ds.transport_from == f"transport in {cfg}"
        assert ds.sources == [f"config file {cfg}", "ExecStart flags --config "
                              f"{cfg} --buffer-kb 256"]

    def test_dropin_replaces_exec_start_and_doctor_flags_win(self, tmp_path):
        """A drop-in's empty ExecStart= then a new one replaces the command; doctor's own
        --transport wins over it."""
        host = fake_host(tmp_path, unit=UNIT_TEXT, dropins={"perf.conf": (
            "[Service]\nExecStart=\nExecStart=/usr/bin/auditd-lite run --transport perfbuf\n")})
        unit = doctor.read_unit(host)
        ds = doctor.daemon_settings(host, unit)
        assert ds.settings.transport == "perfbuf"
        assert ds.transport_from == f"ExecStart of {unit.files[0]}"
        ds = doctor.daemon_settings(host, unit, overrides={"transport": "ringbuf", "db_dir": None})
        assert ds.settings.transport == "ringbuf" and ds.transport_from == "doctor --transport"

    def test_bad_exec_start_flag_is_a_settings_failure(self, tmp_path):
        """An ExecStart flag `run` would refuse is one FAIL line on settings, and the service
        and compile checks are skipped rather than run with other settings."""
        host = fake_host(tmp_path, unit=unit_with(exec_start="/usr/bin/auditd-lite run --transport udp"))
        results = {r.name: r for r in doctor.run_checks(host=host)}
        assert results["settings"].status == FAIL
        assert "ExecStart of" in results["settings"].message and "udp" in results["settings"].message
        assert results["service"].status == SKIP and results["compile"].status == SKIP

    def test_program_settings_follow_the_run_settings(self):
        """The programs' settings carry every run setting the program is compiled with."""
        s = config.RunSettings(transport="perfbuf", buffer_kb=64, min_duration_ms=3, max_args=9,
                               max_arg_bytes=512)
        assert loader.ProgramSettings.for_run(s) == loader.ProgramSettings(
            transport="perfbuf", buffer_kb=64, min_duration_ns=3_000_000, max_args=9, arg_bytes=512)


class TestService:
    @pytest.mark.parametrize("paranoid,transport,status", [
        (2, "ringbuf", OK), (3, "ringbuf", OK), (2, "perfbuf", OK), (3, "perfbuf", FAIL)])
    def test_paranoid_and_transport(self, tmp_path, paranoid, transport, status):
        """With the shipped unit, only the perf buffer under perf_event_paranoid 3 cannot
        capture; its fix offers CAP_SYS_ADMIN in a drop-in, the sysctl, or the ring buffer."""
        host = fake_host(tmp_path, unit=UNIT_TEXT, paranoid=paranoid)
        r = service(host, transport=transport)
        assert r.status == status, r.line()
        assert "\n" not in r.line()
        if status == FAIL:
            assert r.message.startswith("cannot capture: transport perfbuf (doctor --transport) "
                                        "needs perf_event_open")
            assert "CapabilityBoundingSet=CAP_SYS_ADMIN" in r.fix
            assert "kernel.perf_event_paranoid=2" in r.fix and 'transport = "ringbuf"' in r.fix
        else:
            assert r.message.startswith("can capture")
        if transport == "ringbuf":
            assert "needs no perf_event_open" in r.message

    def test_perfbuf_under_paranoid_3_with_admin_dropin(self, tmp_path):
        """A drop-in adding CAP_SYS_ADMIN makes the perf buffer possible at paranoid 3."""
        host = fake_host(tmp_path, unit=UNIT_TEXT, paranoid=3, dropins={
            "perfbuf.conf": "[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN\n"})
        r = service(host, transport="perfbuf")
        assert r.status == OK and "with CAP_SYS_ADMIN" in r.message

    def test_unit_without_perfmon_fails(self, tmp_path):
        """A unit whose bounding set lacks CAP_PERFMON fails with the ring buffer too, naming
        it, with a drop-in that adds it as the fix."""
        host = fake_host(tmp_path, unit=unit_with("CapabilityBoundingSet=CAP_BPF CAP_SYS_PTRACE"))
        r = service(host)
        assert r.status == FAIL
        assert r.message.startswith("cannot capture: loading the program needs CAP_PERFMON;")
        assert r.fix.endswith("CapabilityBoundingSet=CAP_PERFMON")

    def test_unit_without_ptrace_warns(self, tmp_path):
        """CAP_BPF and CAP_PERFMON alone: capture works, with a warning about seeding."""
        host = fake_host(tmp_path, unit=unit_with("CapabilityBoundingSet=CAP_BPF CAP_PERFMON"))
        r = service(host)
        assert r.status == WARN and r.message.startswith("can capture")
        assert r.fix.endswith("CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH")

    def test_no_unit_uses_this_process(self, tmp_path):
        """With no unit anywhere the service line judges this process's own capabilities."""
        host = fake_host(tmp_path, caps=f"{1 << doctor.host.CAP_BPF:016x}")
        r = service(host)
        assert r.status == FAIL and "this process's: no auditd-lite.service" in r.message


class TestLoadPlan:
    def test_bounding_set_from_the_unit(self, tmp_path):
        """The child runs under setpriv with exactly the unit's bounding set."""
        host = fake_host(tmp_path, unit=unit_with())
        unit = doctor.read_unit(host)
        plan = doctor.load.load_plan(host, unit, config.RunSettings())
        assert plan.argv[:2] == ["/usr/bin/setpriv", "--bounding-set=-all,+dac_read_search,+sys_ptrace,+perfmon,+bpf"]
        assert plan.argv[2] == sys.executable and plan.memlock is None

    def test_without_unit_caps_or_setpriv_as_this_process(self, tmp_path):
        """A unit without CapabilityBoundingSet, or no setpriv: the child keeps this process's
        capabilities, and the message says so."""
        host = fake_host(tmp_path / "a", unit=unit_with(None))
        plan = doctor.load.load_plan(host, doctor.read_unit(host), config.RunSettings())
        assert plan.argv[0] == sys.executable and "this process's" in plan.as_whom
        host = fake_host(tmp_path / "b", unit=unit_with(), setpriv=None)
        plan = doctor.load.load_plan(host, doctor.read_unit(host), config.RunSettings())
        assert plan.argv[0] == sys.executable and "setpriv" in plan.as_whom

    def test_memlock_the_child_may_have(self, tmp_path):
        """A LimitMEMLOCK this process may set is given to the child; one above the hard limit
        without CAP_SYS_RESOURCE is stood in for by CAP_IPC_LOCK, for the perf buffer only."""
        host = fake_host(tmp_path / "a", unit=unit_with(extra="[Service]\nLimitMEMLOCK=64K\n"))
        plan = doctor.load.load_plan(host, doctor.read_unit(host), config.RunSettings())
        assert plan.memlock == (64 << 10, 64 << 10)
        if resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] == resource.RLIM_INFINITY:
            return  # nothing is above this process's hard limit
        no_resource = f"{ALL_CAPS_INT & ~(1 << doctor.host.CAP_SYS_RESOURCE):016x}"
        host = fake_host(tmp_path / "b", caps=no_resource,
                         unit=unit_with(extra="[Service]\nLimitMEMLOCK=infinity\n"))
        unit = doctor.read_unit(host)
        perf = doctor.load.load_plan(host, unit, config.RunSettings(transport="perfbuf"))
        assert perf.memlock is None and ",+ipc_lock," in perf.argv[1]
        ring = doctor.load.load_plan(host, unit, config.RunSettings())
        assert ring.memlock is None and "ipc_lock" not in ring.argv[1]


    def test_child_gets_the_memlock(self):
        """run_load gives the child the plan's RLIMIT_MEMLOCK and reads back its result line."""
        code = ("import json, resource; print('noise'); print(%r + json.dumps("
                "{'offsets': resource.getrlimit(resource.RLIMIT_MEMLOCK)}))" % doctor.host.RESULT_MARK)
        plan = doctor.load.LoadPlan([sys.executable, "-c", code], (64 << 10, 128 << 10), "test")
        result, stderr = doctor.load.run_load(plan)
        assert result == {"offsets": [64 << 10, 128 << 10]} and stderr == ""

    def test_child_without_result_line(self):
        """A child that dies before its result line is a failure naming its last stderr line."""
        plan = doctor.load.LoadPlan([sys.executable, "-c", "import sys; sys.exit('setpriv: nope')"],
                               None, "test")
        result, _ = doctor.load.run_load(plan)
        assert result == {"error": "the test process ended without a result: setpriv: nope"}


class TestLoadFailure:
    """One sentence from what bcc raised and printed (outputs recorded from bcc 0.26)."""

    def test_verifier_refusal_through_loader(self):
        """loader's wrapped message and a verifier log: the program, the errno text and the
        verifier's last meaningful line, past the instruction dump and the statistics."""
        error = ("could not compile or load the BPF program: Failed to load BPF program "
                 "b'probe__sys_exit': Permission denied; run 'auditd-lite doctor'")
        stderr = ("bpf: Failed to load program: Permission denied\n0: R1=ctx() R10=fp0\n"
                  "; long ret = (long)ctx->args[1]; @ main.c:300\n"
                  "0: (79) r0 = *(u64 *)(r1 +1000)\nR1 invalid mem access 'scalar'\n"
                  "processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0\n\n"
                  "HINT: The invalid mem access 'scalar' error can happen if ...\n")
        sentence, _ = doctor.load.load_failure(error, stderr)
        assert sentence == ("the kernel refused program probe__sys_exit (Permission "
                            "denied): R1 invalid mem access 'scalar'")

    @pytest.mark.parametrize("error,stderr,sentence", [
        ("Need super-user privileges to run", "bpf: Failed to load program: Operation not permitted\n\n",
         "the kernel refused to load the program (Operation not permitted): loading it needs "
         "CAP_BPF and CAP_PERFMON"),
        ("Failed to compile BPF module b'/x/auditd_lite.bpf.c'",
         "could not open bpf map: stash, error: Operation not permitted\n",
         "the kernel refused to create map stash (Operation not permitted)"),
        ("Failed to compile BPF module b'/x/auditd_lite.bpf.c'",
         "/x/auditd_lite.bpf.c:12:5: warning: unused\n/x/auditd_lite.bpf.c:40:9: error: use of "
         "undeclared identifier 'x'\n1 error generated.\n",
         "clang could not compile auditd_lite.bpf.c: auditd_lite.bpf.c:40:9: error: use of "
         "undeclared identifier 'x'"),
        ("could not attach the program to the raw tracepoint sched_process_free: No such file or "
         "directory", "",
         "the kernel could not attach raw tracepoint sched_process_free (No such file or directory)"),
        ("could not open perf buffer: Operation not permitted (perf_event_open of the per-CPU "
         "buffers, or their mmap against RLIMIT_MEMLOCK)",
         "libbpf: failed to mmap perf buffer on cpu #0: Operation not permitted\n",
         "the perf buffers could not be opened (failed to mmap perf buffer on cpu #0: Operation "
         "not permitted)"),
        ("could not map the ring buffer (268435456 bytes): [Errno 12] Cannot allocate memory", "",
         "the ring buffer could not be opened ([Errno 12] Cannot allocate memory)"),
    ])
    def test_other_failures(self, error, stderr, sentence):
        """Each kind of failure bcc, libbpf and the loader report becomes one sentence naming
        what failed."""
        assert doctor.load.load_failure(error, stderr)[0] == sentence


class TestMain:
    def test_crashing_check_is_one_failed_line(self, tmp_path, monkeypatch):
        """A check that raises becomes a FAIL line naming it; the other checks still run."""
        def boom(host):
            raise RuntimeError("kaboom")

        monkeypatch.setattr(doctor, "check_kernel", boom)
        results = doctor.run_checks(compile_test=False, host=fake_host(tmp_path))
        kernel = next(r for r in results if r.name == "kernel")
        assert kernel.status == FAIL and "kaboom" in kernel.message
        assert [r.name for r in results][-2:] == ["database", "sealing"]

    def test_exit_status_follows_failures(self, tmp_path, monkeypatch):
        """Exit 0 and 'capture can work' when nothing fails; 1 naming the failed checks
        otherwise (here the service's perf buffer under perf_event_paranoid 3)."""
        monkeypatch.setattr(doctor, "check_btf", lambda host: doctor.Result(OK, "btf", "fake"))
        monkeypatch.setattr(doctor, "check_bcc", lambda host: doctor.Result(OK, "bcc", "fake"))
        out = io.StringIO()
        host = fake_host(tmp_path / "a", unit=UNIT_TEXT, paranoid=3)
        assert doctor.main(overrides={"db_dir": tmp_path}, compile_test=False, out=out, host=host) == 0
        assert out.getvalue().splitlines()[-1] == "capture can work on this host"
        out = io.StringIO()
        host = fake_host(tmp_path / "b", unit=UNIT_TEXT, paranoid=3)
        assert doctor.main(overrides={"db_dir": tmp_path, "transport": "perfbuf"},
                           compile_test=False, out=out, host=host) == 1
        assert out.getvalue().splitlines()[-1] == \
            "capture cannot work here: 1 check(s) failed (service)"

    def test_bcc_missing_no_traceback(self, tmp_path):
        """Without Debian's bcc on the path: a FAIL line naming python3-bpfcc, exit 1, no traceback."""
        code = ("import sys; sys.path = [p for p in sys.path if 'dist-packages' not in p]; "
                "from auditd_lite.cli import main; "
                f"sys.exit(main(['doctor', '--db-dir', {str(tmp_path)!r}]))")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "Traceback" not in p.stderr and p.stderr == ""
        bcc_line = next(l for l in p.stdout.splitlines() if l.split()[1] == "bcc")
        assert bcc_line.startswith("FAIL") and "python3-bpfcc" in bcc_line
        compile_line = next(l for l in p.stdout.splitlines() if l.split()[1] == "compile")
        assert compile_line.startswith("skip")


REFUSED_PROGRAM = r"""
/* a raw tracepoint's context is its arguments: 1000 bytes in is past them */
int probe__sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    return *(u64 *)((char *)ctx + 1000);
}
"""


def real_host(tmp_path, unit_text: str) -> Host:
    """This machine, with the given unit as the only one installed."""
    (tmp_path / "auditd-lite.service").write_text(unit_text)
    return Host(unit_files=(str(tmp_path / "auditd-lite.service"),), dropin_dirs=(),
                repo_unit=None, default_config=str(tmp_path / "none.toml"))


@pytest.mark.kernel
class TestOnThisHost:
    def test_doctor_passes(self, tmp_path):
        """On a host that captures, doctor exits 0 with every check ok and nothing on stderr:
        the real program compiled, loaded and attached in a child, bounded to the unit's
        capabilities whenever a unit and setpriv are there. The capture line says the mode the
        compile check attached: ok for fentry, a warning naming the fallback's reason and cost
        for raw_syscalls (this host kind refuses tracing programs)."""
        p = run_cli("doctor", "--db-dir", tmp_path / "db", check=0)
        lines = p.stdout.decode().splitlines()
        assert lines[-1] == "capture can work on this host"
        names = [l.split()[1] for l in lines[:-1]]
        assert names == ["privileges", "kernel", "btf", "tracefs", "tracepoints", "bcc",
                         "headers", "settings", "service", "compile", "capture", "database", "sealing"]
        assert all(l.startswith("ok ") for l in lines[:-1] if l.split()[1] != "capture"), p.stdout.decode()
        compile_line = next(l for l in lines if l.split()[1] == "compile")
        capture_line = next(l for l in lines if l.split()[1] == "capture")
        if "capture mode fentry" in compile_line:
            assert "attached to fentry/__x64_sys_execve" in compile_line
            assert capture_line.startswith("ok    capture      fentry: execve seen at __x64_sys_execve")
        else:
            assert "capture mode raw_syscalls" in compile_line
            assert "compiled, loaded and attached to sys_enter, sys_exit" in compile_line
            assert capture_line.startswith("warn  capture      raw_syscalls, the fallback: ")
            assert "every system call of every process pays ~95 ns" in capture_line
        if doctor.read_unit(Host()) is not None and doctor.Host().setpriv:
            assert "with the unit's bounding set" in compile_line
        headers = next(l for l in lines if l.split()[1] == "headers")
        assert "made for the running kernel" in headers or "field offsets come from BTF" in headers
        assert p.stderr == b""

    def test_doctor_as_nobody_fails(self, tmp_path):
        """As an unprivileged user doctor exits 1 and says to run it as root."""
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "auditd_lite.cli", "doctor", "--db-dir", "/tmp"],
                           capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stdout.splitlines()[0].startswith("FAIL  privileges   running as uid 65534")
        assert "Traceback" not in p.stderr

    def test_unit_without_bpf_fails_to_load(self, tmp_path):
        """The child really has only the unit's bounding set: without CAP_BPF the kernel
        refuses the first map, said in one sentence."""
        host = real_host(tmp_path, unit_with("CapabilityBoundingSet=CAP_PERFMON CAP_SYS_PTRACE"))
        unit = doctor.read_unit(host)
        r = doctor.check_compile(host, unit, doctor.daemon_settings(host, unit))
        assert r.status == FAIL
        assert r.message.startswith("the kernel refused to create map ")
        assert r.message.endswith(" (Operation not permitted)")

    def test_refused_perf_buffer_is_one_sentence(self, tmp_path):
        """A buffer_kb the kernel refuses: 64 MiB perf buffers, more locked memory than the
        child may have (the unit's 64 KiB LimitMEMLOCK, no CAP_IPC_LOCK), fail to map; the
        compile line is that one sentence, with LimitMEMLOCK in the fix."""
        if doctor.unit.read_paranoid(Host()) == -1:
            pytest.skip("perf_event_paranoid -1 lifts the locked-memory limit")
        host = real_host(tmp_path, unit_with(
            exec_start="/usr/bin/auditd-lite run --transport perfbuf --buffer-kb 65536",
            extra="[Service]\nLimitMEMLOCK=64K\n"))
        unit = doctor.read_unit(host)
        r = doctor.check_compile(host, unit, doctor.daemon_settings(host, unit))
        assert (r.status, r.message) == (
            FAIL, "the perf buffers could not be opened (failed to mmap perf buffer on cpu #0: "
                  "Operation not permitted)")
        assert "LimitMEMLOCK" in r.fix

    def test_verifier_refusal_is_one_sentence(self, tmp_path, monkeypatch):
        """No setting in its valid range makes this kernel's verifier refuse the program, so
        the child entry loads a deliberately invalid one through loader.Programs: doctor's
        compile line is the one sentence with the program, the errno text and the verifier's
        reason, taken from bcc's real stderr, and no traceback."""
        (tmp_path / "refused.bpf.c").write_text(REFUSED_PROGRAM)
        host = real_host(tmp_path, UNIT_TEXT)
        unit = doctor.read_unit(host)
        ds = doctor.daemon_settings(host, unit)
        real_plan = doctor.load.load_plan(host, unit, ds.settings)
        code = real_plan.argv[-3]
        assert "load_child" in code
        # the compiler child takes the program from the settings load_child hands it
        swap = ("import auditd_lite.capture.loader as L, dataclasses; for_run = L.ProgramSettings.for_run; "
                "L.ProgramSettings.for_run = classmethod(lambda cls, s: dataclasses.replace(for_run(s), "
                f"program_file={str(tmp_path / 'refused.bpf.c')!r})); ")
        argv = real_plan.argv[:-3] + [code.replace("from auditd_lite.capture.doctor", swap + "from auditd_lite.capture.doctor")
                                      ] + real_plan.argv[-2:]
        monkeypatch.setattr(doctor.load, "load_plan", lambda *a: doctor.load.LoadPlan(argv, None, "test"))
        r = doctor.check_compile(host, unit, ds)
        assert (r.status, r.message) == (
            FAIL, "the kernel refused program probe__sys_enter (Permission denied): "
                  "invalid bpf_context access off=1000 size=8")
        assert "Traceback" not in r.line() and "\n" not in r.line()


def test_cwd_offsets_all_or_none():
    """The walk's offsets resolve from this kernel's BTF as a whole set; from a BTF without its
    structs none is given (the program then has no walk) and the reason names the first one
    missing."""
    cwd, why = loader.cwd_offsets(btf.BTF.from_file())
    assert why is None and set(cwd) == {m for m, *_ in loader.CWD_FIELDS}
    assert all(v.isdigit() for v in cwd.values())
    cwd, why = loader.cwd_offsets(btf.BTF(btf_blob({})))
    assert cwd == {} and why.startswith("task_struct.fs")
