"""BTF offset resolution, on a hand-built blob and on this machine's kernel."""

from __future__ import annotations

import os
import struct

import pytest

from auditd_lite.capture import btf


class BlobBuilder:
    """Writes a minimal BTF blob: ints, pointers, structs and unions."""

    def __init__(self):
        self.types = b""
        self.strings = b"\0"
        self.count = 0

    def name(self, s: str) -> int:
        if not s:
            return 0
        off = len(self.strings)
        self.strings += s.encode() + b"\0"
        return off

    def add(self, name, kind, vlen, size_or_type, extra=b"", kind_flag=0):
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int_(self, name, size):
        return self.add(name, btf.KIND_INT, 0, size, struct.pack("<I", size * 8))

    def ptr(self, target):
        return self.add("", btf.KIND_PTR, 0, target)

    def typedef(self, name, target):
        return self.add(name, btf.KIND_TYPEDEF, 0, target)

    def struct(self, name, size, members, union=False):
        extra = b"".join(struct.pack("<III", self.name(m), t, bits) for m, t, bits in members)
        kind = btf.KIND_UNION if union else btf.KIND_STRUCT
        return self.add(name, kind, len(members), size, extra)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + self.types + self.strings


@pytest.fixture
def sample():
    b = BlobBuilder()
    u32 = b.int_("unsigned int", 4)
    u64 = b.int_("unsigned long", 8)
    pid_t = b.typedef("pid_t", u32)
    anon = b.struct("", 16, [("arg_start", u64, 0), ("arg_end", u64, 64)])
    anon_union = b.struct("", 8, [("whole", u64, 0), ("half", u32, 0)], union=True)
    task = b.struct("task_struct", 64, [("state", u32, 0), ("tgid", pid_t, 32)])
    b.ptr(task)
    b.struct("mm_struct", 64, [("flags", u64, 0), ("", anon, 128), ("", anon_union, 320)])
    return btf.BTF(b.blob())


class TestSyntheticBlob:
    def test_plain_field(self, sample):
        """A direct member's offset and its size through a typedef."""
        assert sample.field("task_struct", "tgid") == btf.Field(4, 4)

    def test_anonymous_struct_member_offsets_add_up(self, sample):
        """Fields inside an anonymous struct get the anonymous member's offset added."""
        assert sample.field("mm_struct", "arg_start") == btf.Field(16, 8)
        assert sample.field("mm_struct", "arg_end") == btf.Field(24, 8)

    def test_anonymous_union(self, sample):
        """Fields inside an anonymous union are found too."""
        assert sample.field("mm_struct", "half") == btf.Field(40, 4)

    def test_missing_field_and_struct(self, sample):
        """Asking for what is not there raises BTFError naming it."""
        with pytest.raises(btf.BTFError, match="no field nope"):
            sample.field("task_struct", "nope")
        with pytest.raises(btf.BTFError, match="struct cred not in BTF"):
            sample.field("cred", "uid")

    def test_bad_magic(self):
        """A blob that is not BTF is refused."""
        with pytest.raises(btf.BTFError):
            btf.BTF(b"\0" * 64)


@pytest.mark.skipif(not os.access(btf.VMLINUX_BTF, os.R_OK), reason="no kernel BTF here")
class TestRunningKernel:
    def test_fields_the_program_reads_exist_with_expected_sizes(self):
        """Every field the BPF program reads resolves on this kernel, with its size."""
        from auditd_lite.capture.loader import FIELDS

        types = btf.BTF.from_file()
        for _macro, struct_name, path, size in FIELDS:
            assert types.field(struct_name, path).size == size, (struct_name, path)

    def test_mm_arg_range_is_inside_mm_struct(self):
        """arg_end follows arg_start (they sit in an anonymous struct in mm_struct)."""
        types = btf.BTF.from_file()
        start = types.field("mm_struct", "arg_start")
        end = types.field("mm_struct", "arg_end")
        assert end.offset == start.offset + 8
