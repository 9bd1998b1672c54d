"""Random invocations of every read-side command: never a traceback, always 0, 1 or 2, evidence untouched.

Hypothesis builds argument lists from valid and invalid values (numbers,
times, paths that are missing, directories, non-databases, SQL that reads,
writes or is garbage, control characters) and runs ``cli.main`` in-process.
`run` (the daemon) and `db upgrade` write by design and `doctor` probes the
host; they are not fuzzed here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditd_lite import cli
from auditd_lite.storage.rotation import RotationPolicy
from auditd_lite.storage.batchwriter import BatchWriter

from auditd_lite.rows import CONTEXT_FIELDS
from conftest import EXEC_CONTEXT, EXEC_GATE, EXIT_GATE, NO_CONTEXT, cli_in_process

SEC = 10**9
T0 = 1_795_000_000 * SEC


def rows(n, start=0):
    out = []
    for i in range(start, start + n):
        t = T0 + i * SEC
        pid = 100 + i // 2
        if i % 2 == 0:
            out.append(("exec", t, pid, pid, 100 + i // 8, 1000, 1000, "sh" if i % 3 else "c\x1bat", t - 5,
                        pid, 1000, 1000, 1, 1, "/bin/sh", b"sh\0-c\0\xffexit 1", 3, 0, None,
                        None, None, None, None, None) + EXEC_CONTEXT + EXEC_GATE)
        else:
            out.append(("exit", t, pid, pid, 100 + i // 8, 1000, 1000, "sh", t - SEC - 5, None, None, None,
                        None, None, None, None, None, None, None, (i % 4) << 8 | (9 if i % 5 == 0 else 0),
                        i % 4, 9 if i % 5 == 0 else 0, 0, SEC) + NO_CONTEXT + EXIT_GATE)
    return out


EXAMPLES = {"query": 320, "tree": 220, "sql": 240, "export": 90, "verify": 80, "stats_db_and_global": 60}


class World:
    def __init__(self, root: Path):
        self.db = root / "db"
        bw = BatchWriter(self.db, {"keep": 0}, rotation=RotationPolicy(size_mb=0.001))
        bw.open()
        bw.write(rows(60))
        bw.write(rows(60, start=60))
        bw.close()
        self.out = root / "out"
        self.out.mkdir()
        self.export = self.out / "case.db"
        assert cli.main(["export", "--db-dir", str(self.db), "-o", str(self.export)]) == 0
        self.junk = root / "junk.db"
        self.junk.write_bytes(b"this is not a database\n" * 40)
        self.empty = root / "empty.db"
        self.empty.write_bytes(b"")
        self.files = sorted(p for p in self.db.iterdir() if p.suffix == ".db") + [self.export]
        self.digests = self.digest()

    def digest(self) -> dict:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.files}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("fuzz"))


def invoke(argv: list[str]) -> tuple[int, str, str]:
    return cli_in_process(*argv)


def check(world: World, argv: list[str]) -> None:
    status, out, err = invoke(argv)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert status in (0, 1, 2), (argv, status, err)
    if status == 2:
        # one line naming the problem, whatever the arguments held
        lines = err.splitlines()
        assert len(lines) >= 1 and lines[-1].startswith("auditd-lite: "), (argv, err)
    assert world.digest() == world.digests, argv




def test_error_line_escapes_control_characters(world):
    """A bad value holding a newline or an escape sequence still gives one escaped line."""
    status, out, err = invoke(["query", "--db-dir", str(world.db), "--pid", "1\n2\x1b[2J"])
    assert status == 2 and err.count("\n") == 1 and "\x1b" not in err


# --- value strategies ----------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
numbers = st.one_of(st.integers(-5, 5).map(str), st.integers(-(2**70), 2**70).map(str),
                    st.sampled_from(["", "0x10", "1e3", "١٢", " 7", "7 ", "nan", "--1", "+3"]), text)
times = st.one_of(st.sampled_from(["10m", "2h", "3d", "1w", "now", "1h30m", "2026-11-18", "2026-11-18T11:07Z",
                                   "2026-11-18T11:07:30+02:00", "2026-13-40", "yesterday-ish", "", "-5m",
                                   "1.5h", "9999-12-31T23:59:59Z", "0001-01-01", "T", "2026-11-18T11:07"]),
                  text)
events = st.sampled_from(["exec", "exit", "exec_failed", "fork", "", "EXEC"])
formats = st.sampled_from(["table", "json", "csv", "xml", ""])
# the fixture's execs have EXEC_CONTEXT: its hash, unit and container (if any) among the values
_EXEC = dict(zip(CONTEXT_FIELDS, EXEC_CONTEXT))
hashes = st.one_of(st.sampled_from([_EXEC["sha256"], _EXEC["sha256"][:6].upper(), _EXEC["sha256"] + "0", "",
                                    "0x5e", "5e 5e", "g"]),
                   st.text("0123456789abcdefABCDEF", max_size=66), text)
units = st.one_of(st.sampled_from([_EXEC["unit"] or "cron.service", "", "ssh.service"]), text)
containers = st.one_of(st.sampled_from([_EXEC["container_id"] or "3f4e5d6c7b8a", "", "0"]), text)
sql_texts = st.one_of(
    st.sampled_from([
        "SELECT count(*) FROM events", "select count(*) from events;", "SELECT * FROM runs",
        "SELECT comm, count(*) FROM events GROUP BY comm", "SELECT * FROM events WHERE pid = 100",
        "SELECT * FROM files", "PRAGMA table_info(events)", "SELECT * FROM manifest",
        "SELECT argv FROM events LIMIT 3", "SELECT 1/0", "SELECT zeroblob(10)", "SELECT x'00ff1b'",
        "DELETE FROM events", "DELETE FROM f0.events", "UPDATE f0.runs SET host = 'x'", "DROP TABLE f0.events",
        "ATTACH DATABASE 'x.db' AS x", "VACUUM", "PRAGMA query_only=0", "PRAGMA f0.user_version = 3",
        "CREATE TABLE t (x)", "SELECT 1; SELECT 2", "", "   ", "SELEC", "SELECT * FROM nosuch",
        "SELECT load_extension('x')", "SELECT fts3_tokenizer('simple')", "INSERT INTO f0.events DEFAULT VALUES",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x<5) SELECT * FROM n",
        "SELECT count(*) FROM events e JOIN runs r ON r.id = e.run_id", "SELECT 9223372036854775807 + 1",
    ]),
    text)


def source(world: World):
    valid = ["--db-dir", str(world.db)]
    return st.sampled_from([
        valid, valid, valid, valid, valid, [], ["--db-dir", str(world.db)], ["--db", str(world.db / "audit.db")], ["--db", str(world.export)],
        ["--db", str(world.junk)], ["--db", str(world.empty)], ["--db-dir", str(world.db / "nope")],
        ["--db", str(world.db)], ["--db-dir", str(world.junk)], ["--db-dir", str(world.db), "--db", str(world.export)],
    ])


def options(pairs: dict) -> st.SearchStrategy:
    """A random subset of ``--flag value`` pairs, shuffled, sometimes with a stray argument."""
    items = [st.tuples(st.just(flag), values) for flag, values in pairs.items()]
    return st.lists(st.one_of(*items), max_size=5).flatmap(
        lambda chosen: st.lists(st.sampled_from(["--bogus", "-x", "extra", "--help"]), max_size=1).map(
            lambda stray: [a for flag, v in chosen for a in (flag, v)] + stray))


QUERY_FLAGS = {
    "--comm": text, "--exit-code": numbers, "--signal": numbers, "--pid": numbers, "--ppid": numbers,
    "--uid": numbers, "--filename": text, "--arg": text, "--since": times, "--until": times,
    "--min-duration-ms": numbers, "--event": events, "--format": formats, "--limit": numbers,
    "--sha256": hashes, "--unit": units, "--container": containers,
}


@settings(max_examples=EXAMPLES["query"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_query(world, data):
    """query with random filters, formats and sources."""
    argv = ["query", *data.draw(source(world)), *data.draw(options(QUERY_FLAGS))]
    check(world, argv)


@settings(max_examples=EXAMPLES["tree"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_tree(world, data):
    """tree with random pids (seen, reused, never seen, garbage), --at and --depth."""
    pid = data.draw(st.one_of(st.integers(0, 200).map(str), numbers))
    argv = ["tree", pid, *data.draw(source(world)),
            *data.draw(options({"--at": times, "--depth": numbers, "--format": formats}))]
    check(world, argv)


@settings(max_examples=EXAMPLES["sql"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_sql(world, data):
    """sql with reading, writing and garbage statements."""
    argv = ["sql", data.draw(sql_texts), *data.draw(source(world)),
            *data.draw(options({"--format": formats, "--since": times, "--until": times}))]
    check(world, argv)


@settings(max_examples=EXAMPLES["export"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_export(world, data):
    """export with random windows, filters and targets (new, existing, in the evidence directory)."""
    target = data.draw(st.sampled_from([
        world.out / "a.db", world.out / "b.db", world.export, world.db / "x.db", world.out,
        world.out / "missing" / "c.db", world.db / "audit.db"]))
    flags = dict(QUERY_FLAGS)
    for flag in ("--format", "--limit", "--sha256", "--unit", "--container"):  # query's only
        flags.pop(flag)
    argv = ["export", "-o", str(target),
            *data.draw(st.sampled_from([[], ["--db-dir", str(world.db)], ["--db-dir", str(world.junk)]])),
            *data.draw(options(flags)), *data.draw(st.sampled_from([[], ["--force"]]))]
    if target == world.export or "--db-dir" not in argv:
        argv = [a for a in argv if a != "--force"]  # the reference export and the default dir stay
    check(world, argv)


@settings(max_examples=EXAMPLES["verify"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_verify(world, data):
    """verify with random files, directories and non-databases."""
    files = data.draw(st.lists(st.sampled_from([
        str(world.export), str(world.db / "audit.db"), str(world.junk), str(world.empty), str(world.db),
        str(world.db / "nope.db"), *map(str, world.files)]), max_size=3))
    extra = data.draw(st.sampled_from([[], ["--db-dir", str(world.db)], ["--db-dir", str(world.out)]]))
    check(world, ["verify", *files, *extra])


@settings(max_examples=EXAMPLES["stats_db_and_global"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_stats_db_and_global(world, data):
    """stats, db current, --help/--version and unknown commands."""
    argv = data.draw(st.one_of(
        st.tuples(st.just("stats"), source(world), st.lists(st.sampled_from(["--format", "json", "table", "x"]),
                                                            max_size=2))
        .map(lambda t: [t[0], *t[1], *t[2]]),
        st.tuples(st.just(["db", "current"]), source(world)).map(lambda t: [*t[0], *t[1]]),
        st.sampled_from([["--help"], ["--version"], [], ["nosuch"], ["query", "--help"], ["tree", "--help"],
                         ["sql", "--help"], ["export", "--help"], ["verify", "--help"], ["-x"]]),
    ))
    check(world, argv)


def test_fuzz_covers_a_thousand_invocations():
    """The examples above add up to at least 1,000 invocations."""
    assert sum(EXAMPLES.values()) >= 1000
