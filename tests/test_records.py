"""Decoding raw records as the BPF program lays them out."""

from __future__ import annotations

from auditd_lite import rows
from auditd_lite.capture import records as R


def exec_raw(args: bytes, filename=b"/bin/x\0", argc=0, flags=0, kind=R.EV_EXEC, err=0,
             cwd=b"b\0a\0", mntns=0, abi=R.ABI_X64, exe=(0, 0, 0, 0, 0)):
    """``exe``: the record's (exe_dev, exe_ino, exe_size, exe_mtime_ns, exe_ctime_ns)."""
    dev, ino, size, mtime, ctime = exe
    hdr = R.EXEC_EVENT.pack(kind, 100, 101, 1, 5_000, 4_000, 3_000, 1000, 1000, b"comm\0",
                            77, 0, 4294967295, 4294967295, 101, err, argc, flags,
                            len(filename), len(args), len(cwd), abi, mntns, dev, 0, ino, size, mtime, ctime)
    return hdr + filename + args + cwd


class TestDecoder:
    def test_exit_status_split(self):
        """A wait status of 768 is exit code 3; 9 is signal 9; 0x80 marks a core dump."""
        d = R.Decoder(128, realtime_offset_ns=10)
        for status, want in ((768, (3, 0, False)), (9, (0, 9, False)), (0x86, (0, 6, True))):
            raw = R.EXIT_EVENT.pack(R.EV_EXIT, 5, 6, 1, 2_000, 1_000, 500, 0, 0, b"sh\0", 1_000, status, 0)
            row = d.decode(raw)
            assert row[rows.F_EVENT] == "exit"
            assert row[rows.F_TIME] == 2_010
            assert (row[rows.F_EXIT_CODE], row[rows.F_SIGNAL], bool(row[22])) == want
            assert row[rows.F_DURATION] == 1_000

    def test_exec_argv_whole(self):
        """A complete argument area gives the exact argc and byte-exact argv."""
        row = R.Decoder(128).decode(exec_raw(b"x\0a b\0\xff\0"))
        assert row[rows.F_ARGV] == b"x\0a b\0\xff"
        assert row[16] == 3
        assert row[rows.F_ARGS_TRUNCATED] == 0
        assert row[rows.F_FILENAME] == "/bin/x"

    def test_exec_too_many_args_cut_and_flagged(self):
        """More arguments than max_args are cut to max_args and flagged; argc keeps the true count."""
        args = b"\0".join(b"a%d" % i for i in range(10)) + b"\0"
        row = R.Decoder(4).decode(exec_raw(args, argc=4, flags=R.FLAG_ARGC_TRUNCATED))
        assert row[rows.F_ARGV] == b"a0\0a1\0a2\0a3"
        assert row[16] == 10
        assert row[rows.F_ARGS_TRUNCATED] == 1

    def test_exec_bytes_truncated(self):
        """A cut argument area is flagged and argc comes from the syscall-entry count."""
        row = R.Decoder(128).decode(exec_raw(b"x\0yyyy", argc=5, flags=R.FLAG_ARGS_TRUNCATED))
        assert row[rows.F_ARGS_TRUNCATED] == 1
        assert row[16] == 5
        assert row[rows.F_ARGV] == b"x\0yyyy"

    def test_failed_exec_errno(self):
        """exec_failed carries the errno and the entry-time filename."""
        row = R.Decoder(128).decode(exec_raw(b"p\0", filename=b"/no\0", argc=1,
                                             kind=R.EV_EXEC_FAILED, err=2))
        assert row[rows.F_EVENT] == "exec_failed"
        assert row[rows.F_ERRNO] == 2
        assert row[rows.F_FILENAME] == "/no"

    def test_failed_exec_without_entry_copy_is_marked(self):
        """A failed exec whose entry copy was evicted is still reported, marked truncated."""
        row = R.Decoder(128).decode(exec_raw(b"", filename=b"", kind=R.EV_EXEC_FAILED, err=13,
                                             flags=R.FLAG_NO_STASH))
        assert row[rows.F_ARGS_TRUNCATED] == 1
        assert row[rows.F_ARGV] == b""

    def test_non_utf8_comm_escaped(self):
        """comm bytes that are not UTF-8 are escaped, never dropped."""
        assert R.text(b"a\xffb\0junk") == "a\\xffb"


class TestColumns:
    """The schema models are the one description of the columns: the decoder's tuples follow them."""

    def test_row_fields_are_the_events_columns_after_the_writers(self):
        """A column added to, removed from or moved in schema.events and not in ROW_FIELDS (or
        the reverse) fails here."""
        from auditd_lite.storage.schema import events

        columns = tuple(c.name for c in events.columns)
        assert columns[:3] == ("id", "run_id", "batch_id")
        assert rows.ROW_FIELDS == columns[3:]

    def test_decoded_values_sit_under_their_column(self):
        """Each kind of record decodes to one value per DECODED_FIELDS name (ROW_FIELDS before
        what user space adds), each under its name."""
        d = R.Decoder(128)
        exit_raw = R.EXIT_EVENT.pack(R.EV_EXIT, 5, 6, 1, 2_000, 1_000, 500, 7, 8, b"sh\0", 900, 0x300, 0)
        # ROW_FIELDS without what user space adds, in order; the context goes in at CONTEXT_AT
        assert tuple(f for f in rows.ROW_FIELDS if f not in rows.SYSTEM_FIELDS) == rows.DECODED_FIELDS
        assert rows.ROW_FIELDS[rows.CONTEXT_AT:rows.CONTEXT_AT + len(rows.SYSTEM_FIELDS)] == rows.SYSTEM_FIELDS
        exits = dict(zip(rows.DECODED_FIELDS, d.decode(exit_raw), strict=True))
        assert exits == dict.fromkeys(rows.DECODED_FIELDS) | {
            "event": "exit", "time_ns": 2_000, "pid": 5, "tid": 6, "ppid": 1, "uid": 7, "gid": 8,
            "comm": "sh", "start_ns": 1_000, "status": 0x300, "exit_code": 3, "signal": 0,
            "core_dumped": 0, "duration_ns": 900, "parent_start_ns": 500}
        for kind, errno in ((R.EV_EXEC, None), (R.EV_EXEC_FAILED, -2)):
            row = d.decode(exec_raw(b"x\0", argc=1, kind=kind, err=-2))
            assert dict(zip(rows.DECODED_FIELDS, row, strict=True)) == dict.fromkeys(rows.DECODED_FIELDS) | {
                "event": R.EVENT_NAMES[kind], "time_ns": 5_000, "pid": 100, "tid": 101, "ppid": 1,
                "uid": 1000, "gid": 1000, "comm": "comm", "start_ns": 4_000, "old_pid": 101,
                "euid": 0, "auid": 4294967295, "sessionid": 4294967295, "cgroup_id": 77,
                "filename": "/bin/x", "argv": b"x", "argc": 1, "args_truncated": 0, "errno": errno,
                "cwd": "/a/b", "cwd_status": "ok", "abi": "x64", "parent_start_ns": 3_000}
