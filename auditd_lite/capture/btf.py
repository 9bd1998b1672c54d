"""Kernel struct field offsets resolved from the running kernel's BTF.

bcc compiles our C against whatever headers are installed, which are often
not the running kernel's; layouts taken from them are wrong. The offsets here
come from ``/sys/kernel/btf/vmlinux`` and are handed to the compiler as ``-D``
constants (docs/design.md, "BTF offsets, not header layouts").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F

# kinds, from include/uapi/linux/btf.h
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# bytes that follow struct btf_type: fixed part, per-member part
_EXTRA = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BTFError(Exception):
    """The BTF blob is unreadable or lacks a struct or field we need."""


@dataclass(frozen=True)
class Field:
    offset: int  # bytes from the start of the outermost struct
    size: int  # bytes


class BTF:
    """A parsed BTF blob: enough to find struct members and their sizes."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BTFError("BTF blob too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BTFError("not a BTF blob (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._str_base = hdr_len + str_off
        self._str_end = self._str_base + str_len
        # type id -> byte offset of its struct btf_type; id 0 is void
        self._offsets = [0]
        self._structs: dict[str, int] = {}
        # btf_trace_<event>: the typedef the kernel declares for each raw
        # tracepoint, a pointer to the prototype its programs are called with
        self._tracepoints: dict[str, int] = {}
        # KIND_FUNC type ids: their names are decoded only if a function is looked for
        self._func_ids: list[int] = []
        self._funcs: dict[str, int] | None = None
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.unpack_from
        offsets = self._offsets
        structs = self._structs
        tracepoints = self._tracepoints
        func_ids = self._func_ids
        prefix = b"btf_trace_"
        str_base = self._str_base
        while pos < end:
            name_off, info = unpack("<II", data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            offsets.append(pos)
            if kind == KIND_STRUCT and name_off:
                structs.setdefault(self._name(name_off), len(offsets) - 1)
            elif kind == KIND_TYPEDEF and data.startswith(prefix, str_base + name_off):
                tracepoints[self._name(name_off)[len(prefix):]] = len(offsets) - 1
            elif kind == KIND_FUNC:
                func_ids.append(len(offsets) - 1)
            fixed, per = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen

    @classmethod
    def from_file(cls, path: str = VMLINUX_BTF) -> "BTF":
        with open(path, "rb") as f:
            return cls(f.read())

    def _name(self, off: int) -> str:
        start = self._str_base + off
        stop = self._data.index(b"\0", start, self._str_end)
        return self._data[start:stop].decode()

    def _type(self, tid: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kind_flag, name_off, size_or_type) of a type id."""
        pos = self._offsets[tid]
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, name_off, size_or_type

    def _resolve(self, tid: int) -> int:
        """Follow typedefs and qualifiers to the underlying type id."""
        while True:
            kind, _, _, _, ref = self._type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = ref

    def sizeof(self, tid: int) -> int:
        tid = self._resolve(tid)
        kind, _, _, _, size = self._type(tid)
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            elem, _, nelems = struct.unpack_from("<III", self._data, self._offsets[tid] + 12)
            return self.sizeof(elem) * nelems
        return size

    def _members(self, tid: int):
        kind, vlen, kind_flag, _, _ = self._type(tid)
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BTFError(f"type {tid} is not a struct or union")
        base = self._offsets[tid] + 12
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, base + 12 * i)
            bit_off = moff & 0xFFFFFF if kind_flag else moff
            yield (self._name(name_off) if name_off else ""), mtype, bit_off

    def _find(self, tid: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member ``name``, looking inside anonymous members."""
        for mname, mtype, bit_off in self._members(tid):
            if mname == name:
                return bit_off, mtype
            if not mname:
                inner = self._resolve(mtype)
                if self._type(inner)[0] in (KIND_STRUCT, KIND_UNION):
                    found = self._find(inner, name)
                    if found is not None:
                        return bit_off + found[0], found[1]
        return None

    def tracepoint_args(self, event: str) -> list[int] | None:
        """Sizes of the arguments a raw tracepoint program of ``event`` gets
        (``ctx->args[i]``), or None when this kernel has no such tracepoint."""
        tid = self._tracepoints.get(event)
        if tid is None:
            return None
        proto = self._resolve(self._type(self._resolve(tid))[4])  # typedef -> pointer -> proto
        kind, vlen, _, _, _ = self._type(proto)
        if kind != KIND_FUNC_PROTO:
            raise BTFError(f"btf_trace_{event} is not a function prototype")
        base = self._offsets[proto] + 12
        params = [struct.unpack_from("<II", self._data, base + 8 * i)[1] for i in range(vlen)]
        # the first parameter is the tracepoint's private data, not an argument
        return [self.sizeof(t) for t in params[1:]]

    def has_function(self, name: str) -> bool:
        """Whether the kernel's BTF describes a function of this name (what a tracing program
        names as the function it attaches to)."""
        return self.function_id(name) is not None

    def function_id(self, name: str) -> int | None:
        """The BTF type id of the function ``name`` (a tracing program's attach_btf_id), or None."""
        if self._funcs is None:
            self._funcs = {self._name(self._type(tid)[3]): tid for tid in self._func_ids}
        return self._funcs.get(name)

    def struct_size(self, name: str) -> int:
        tid = self._structs.get(name)
        if tid is None:
            raise BTFError(f"struct {name} not in BTF")
        return self.sizeof(tid)

    def field(self, struct_name: str, path: str) -> Field:
        """Offset and size of ``path`` (``a.b.c``) inside ``struct struct_name``."""
        tid = self._structs.get(struct_name)
        if tid is None:
            raise BTFError(f"struct {struct_name} not in BTF")
        total_bits = 0
        mtype = tid
        for part in path.split("."):
            found = self._find(self._resolve(mtype), part)
            if found is None:
                raise BTFError(f"struct {struct_name} has no field {path}")
            bits, mtype = found
            total_bits += bits
        if total_bits % 8:
            raise BTFError(f"{struct_name}.{path} is a bitfield")
        return Field(total_bits // 8, self.sizeof(mtype))
