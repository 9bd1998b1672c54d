"""The Python decoder's layout against bpf/auditd_lite.h, the record contract."""

from __future__ import annotations

import re
from pathlib import Path

from auditd_lite.capture import records

HEADER = Path(__file__).resolve().parent.parent / "bpf" / "auditd_lite.h"
SIZES = {"__u8": 1, "__u16": 2, "__s16": 2, "__u32": 4, "__s32": 4, "__u64": 8, "__s64": 8, "char": 1}


def parse_header():
    """{struct: [(field, offset, size)]} and {macro: int}, computed with C's natural alignment."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    defines = {m: int(v) for m, v in re.findall(r"#define\s+(\w+)\s+(\d+)\b", text)}
    structs: dict[str, list] = {}
    sizes: dict[str, tuple[int, int]] = {}  # name -> (size, alignment)
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\};", text, flags=re.S):
        off, align_max, fields = 0, 1, []
        for ftype, fname, count in re.findall(r"(struct\s+\w+|\w+)\s+(\w+)(?:\[(\w+)\])?;", body):
            if ftype.startswith("struct "):
                size, align = sizes[ftype.split()[1]]
            else:
                size = align = SIZES[ftype]
            n = int(defines.get(count, count or 1)) if count else 1
            off = (off + align - 1) // align * align
            fields.append((fname, off, size * n))
            off += size * n
            align_max = max(align_max, align)
        total = (off + align_max - 1) // align_max * align_max
        sizes[name] = (total, align_max)
        structs[name] = fields
    return structs, defines, {k: v[0] for k, v in sizes.items()}


class TestContract:
    def test_field_offsets_match_header(self):
        """Every field's offset and size in records.LAYOUT is what the C header lays out."""
        structs, _, _ = parse_header()
        for name, fields in records.LAYOUT.items():
            assert structs[name] == fields, name

    def test_struct_sizes_match_header(self):
        """The struct formats the decoder unpacks have the header's sizes."""
        _, _, sizes = parse_header()
        assert records.EVENT_HDR.size == sizes["event_hdr"]
        assert records.EXIT_EVENT.size == sizes["exit_event"]
        assert records.EXEC_EVENT.size == sizes["exec_event"]

    def test_constants_match_header(self):
        """Event types, flags and counter indexes are the header's numbers."""
        _, defines, _ = parse_header()
        for name in ("EV_EXEC", "EV_EXEC_FAILED", "EV_EXIT", "FLAG_ARGS_TRUNCATED",
                     "FLAG_ARGC_TRUNCATED", "FLAG_FILENAME_TRUNCATED", "FLAG_ARGV_FROM_STASH",
                     "FLAG_NO_STASH", "CNT_LOST", "CNT_STASH_MISS", "CNT_MAX", "COMM_LEN"):
            assert getattr(records, name) == defines[name], name
