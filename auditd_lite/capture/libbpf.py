"""The few calls of Debian's libbpf1 the daemon makes, through ctypes.

The daemon receives its programs and maps as file descriptors from the
compiler child (capture/compiler.py) and from then on needs no compiler:
it attaches the programs (BPF_RAW_TRACEPOINT_OPEN), reads the counters and
the map facts, and reads the perf buffers with libbpf's consumer. The ring
buffer has a reader of its own (capture/ringbuf.py), which measured cheaper
per record than libbpf's callback (docs/design.md, "The daemon never maps the
compiler").

libbpf 1.x returns a negative errno from every int call, NULL with errno set
from the constructors.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from ..errors import CannotCapture

SONAME = "libbpf.so.1"

# enum bpf_map_type values the daemon checks it was given (include/uapi/linux/bpf.h)
MAP_PERCPU_ARRAY = 6
MAP_PERF_EVENT_ARRAY = 4
MAP_RINGBUF = 27

SAMPLE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)

_lib = None


def lib() -> ctypes.CDLL:
    """libbpf, loaded once; CannotCapture saying how to install it when it is missing."""
    global _lib
    if _lib is None:
        try:
            so = ctypes.CDLL(SONAME, use_errno=True)
        except OSError as e:
            raise CannotCapture(f"{SONAME} is missing: install Debian's libbpf1 "
                                f"(apt-get install libbpf1) [{e}]") from None
        so.bpf_raw_tracepoint_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
        so.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        so.bpf_map_get_next_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        so.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p,
                                              ctypes.POINTER(ctypes.c_uint32)]
        so.libbpf_num_possible_cpus.argtypes = []
        so.perf_buffer__new.restype = ctypes.c_void_p
        so.perf_buffer__new.argtypes = [ctypes.c_int, ctypes.c_size_t, SAMPLE_FN, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_void_p]
        so.perf_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
        so.perf_buffer__consume.argtypes = [ctypes.c_void_p]
        so.perf_buffer__free.argtypes = [ctypes.c_void_p]
        _lib = so
    return _lib


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise CannotCapture(f"{what}: {os.strerror(-ret)}")
    return ret


def raw_tracepoint_open(name: str | None, prog_fd: int) -> int:
    """Attach a loaded program: to the raw tracepoint ``name``, or with None a tracing program
    (fentry/fexit) to the function it named at load (BPF_RAW_TRACEPOINT_OPEN takes both, and
    on 5.10, where BPF_LINK_CREATE refuses tracing programs). Closing the fd detaches it."""
    return _check(lib().bpf_raw_tracepoint_open(name.encode() if name is not None else None, prog_fd),
                  f"could not attach the program to the raw tracepoint {name}" if name is not None
                  else "could not attach a tracing program to its function")


class _ProgLoadOpts(ctypes.Structure):
    # the head of libbpf's struct bpf_prog_load_opts (1.0 on): sz says how much of it is given
    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int),
                ("expected_attach_type", ctypes.c_uint32), ("prog_btf_fd", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_ifindex", ctypes.c_uint32),
                ("kern_version", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_btf_obj_fd", ctypes.c_uint32), ("attach_prog_fd", ctypes.c_int)]


PROG_TRACING, TRACE_FENTRY = 26, 24  # enum bpf_prog_type, enum bpf_attach_type
# r2 = *(u64 *)(r1 + 0); r0 = 0; exit: an fentry program that reads the function's first argument
_READ_ARG0 = bytes.fromhex("7912000000000000" "b700000000000000" "9500000000000000")


def fentry_probe(btf_id: int) -> int:
    """Load (and close) the smallest fentry program that reads the function's first argument:
    0 when the kernel takes it, else the errno it answered (EPERM: tracing programs are not
    allowed here; EACCES or EINVAL: the verifier refused the read, as for 5.10's
    __x64_sys_execveat, whose argument BTF leaves a forward declaration). No compiler needed."""
    so = lib()
    so.bpf_prog_load.restype = ctypes.c_int
    so.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                 ctypes.c_size_t, ctypes.POINTER(_ProgLoadOpts)]
    opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), expected_attach_type=TRACE_FENTRY,
                         attach_btf_id=btf_id)
    fd = so.bpf_prog_load(PROG_TRACING, b"auditd_probe", b"GPL", _READ_ARG0, len(_READ_ARG0) // 8,
                          ctypes.byref(opts))
    if fd < 0:
        return -fd
    os.close(fd)
    return 0


def possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "could not count the possible CPUs")


class _MapInfo(ctypes.Structure):
    # the head of struct bpf_map_info; the kernel fills as much as it is given
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


@dataclass(frozen=True)
class MapInfo:
    type: int
    key_size: int
    value_size: int
    max_entries: int
    name: str


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
           "could not read a map's description")
    return MapInfo(info.type, info.key_size, info.value_size, info.max_entries,
                   info.name.decode(errors="replace"))


def map_keys(fd: int) -> list[bytes]:
    """Every key of a hash map, as raw bytes, at the time of the walk."""
    size = map_info(fd).key_size
    keys, prev, key = [], None, ctypes.create_string_buffer(size)
    while lib().bpf_map_get_next_key(fd, prev, key) == 0:
        keys.append(key.raw)
        prev = ctypes.create_string_buffer(key.raw, size)
    return keys


class PerCpuCounters:
    """A per-CPU array of u64 counters, each summed over CPUs."""

    def __init__(self, fd: int, entries: int):
        self.fd = fd
        self.entries = entries
        self._values = (ctypes.c_uint64 * possible_cpus())()
        self._key = ctypes.c_uint32()

    def read(self) -> list[int]:
        out = []
        for i in range(self.entries):
            self._key.value = i
            _check(lib().bpf_map_lookup_elem(self.fd, ctypes.byref(self._key), self._values),
                   "could not read the program's counters")
            out.append(sum(self._values))
        return out


class PerfBuffers:
    """libbpf's perf buffer consumer: one buffer of ``pages`` per CPU, opened through
    perf_event_open and placed in the program's perf event array.

    ``on_record(raw: bytes)`` gets each record copied out. The kernel's own
    lost-sample reports are not passed on: the program counts a failed
    submission itself (CNT_LOST), and adding them would count each drop twice.
    """

    def __init__(self, map_fd: int, pages: int, on_record):
        def sample(_ctx, _cpu, data, size):
            on_record(ctypes.string_at(data, size))

        self._cb = SAMPLE_FN(sample)  # kept: libbpf holds a pointer to it
        ptr = lib().perf_buffer__new(map_fd, pages, self._cb, None, None, None)
        if not ptr:
            err = ctypes.get_errno()
            raise CannotCapture(f"could not open perf buffer: {os.strerror(err)} (perf_event_open "
                                "of the per-CPU buffers, or their mmap against RLIMIT_MEMLOCK)")
        self._pb = ptr

    def poll(self, timeout_ms: int) -> None:
        ret = lib().perf_buffer__poll(self._pb, timeout_ms)
        if ret < 0 and -ret != 4:  # EINTR: a signal arrived, the loop polls again
            _check(ret, "could not read the perf buffers")

    def consume(self) -> None:
        lib().perf_buffer__consume(self._pb)

    def close(self) -> None:
        if self._pb:
            lib().perf_buffer__free(self._pb)
            self._pb = None
