"""hunt's rules without a kernel: the vendored SigmaHQ files, every bundled rule evaluated or
listed with its reason, Sigma's semantics on made-up events (case, wildcards, re, all, null,
numbers, an unknown value under not), what cannot be evaluated and why, rule files that do not
parse, and the prefilter held to the matcher on every bundled rule."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest
from hypothesis import given, settings, strategies as st

from auditd_lite.hunt import fields, matcher, rules
from auditd_lite.hunt.fields import COLUMNS, Event, Users, command_line
from auditd_lite.hunt.prefilter import Prefilter
from auditd_lite.investigate.query import split_argv
from conftest import cli_in_process

SIGMA = rules.BUNDLED
FOLDERS = {"rules": 122, "rules-emerging-threats": 20, "rules-threat-hunting": 2}


def blob_id(data: bytes) -> str:
    """git's id of a file's bytes (what `git ls-tree` lists)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class TestVendored:
    def test_every_rule_file_is_upstreams_byte_for_byte(self):
        """Each vendored .yml has the git blob id BLOBS lists for its path at the pinned commit,
        and BLOBS lists every .yml here: none edited, none missing, none added."""
        listed = {}
        for line in (SIGMA / "BLOBS").read_text().splitlines():
            blob, path = line.split("  ", 1)
            listed[path] = blob
        here = {str(p.relative_to(SIGMA)): blob_id(p.read_bytes()) for p in SIGMA.rglob("*.yml")}
        assert here == listed
        assert {f: sum(1 for p in here if p.split("/")[0] == f) for f in FOLDERS} == FOLDERS

    def test_licence_text_and_provenance(self):
        """The DRL 1.1 text is the upstream file (its blob id in the README), and the README names
        the pinned commit; every rule keeps its author field."""
        readme = (SIGMA / "README.md").read_text()
        assert blob_id((SIGMA / "LICENSE.Detection.Rules.md").read_bytes()) in readme
        assert "8eaafff1f2845a696050e05e72ba1140ee190698" in readme
        assert (SIGMA / "LICENSE.Detection.Rules.md").read_text().startswith(
            "# Detection Rule License (DRL) 1.1")
        assert all(re.search(r"^author: \S", p.read_text(), re.M) for p in SIGMA.rglob("*.yml"))


class TestBundled:
    def test_every_bundled_rule_evaluates_or_says_why(self):
        """All 144 files load as Linux process_creation rules; each is evaluated or carries the
        reason it is not (today: every one evaluates); none is dropped or skipped."""
        rs = rules.load()
        assert (len(rs.rules), rs.problems, rs.skipped) == (144, [], [])
        assert all(r.evaluable or r.why_not for r in rs.rules)
        assert sum(r.evaluable for r in rs.rules) == 144
        assert {r.path for r in rs.rules} == set(SIGMA.rglob("*.yml"))

    def test_list_shows_every_rule_and_the_counts(self):
        """`hunt --list` has a line per rule saying evaluated, then the counts; --format json a
        row per rule with its id, level, file and state."""
        status, out, err = cli_in_process("hunt", "--list")
        assert status == 0 and err == ""
        lines = out.splitlines()
        assert len(lines) == 145 and lines[-1] == ("144 rules loaded, 144 evaluated, 0 not; 0 files "
                                                   "did not parse")
        assert all(line.endswith(": evaluated") for line in lines[:-1])
        status, out, _ = cli_in_process("hunt", "--list", "--format", "json")
        rows = [json.loads(line) for line in out.splitlines()]
        assert len(rows) == 144 and all(r["evaluated"] and r["author"] for r in rows)
        assert {r["file"].split("/")[1] for r in rows} == set(FOLDERS)


# --- made-up events ------------------------------------------------------------

class P:
    """A parent as parents.Parent shows one (image, command line; None: unknown)."""

    def __init__(self, image=None, argv=None):
        self.image = image
        self.command_line = " ".join(argv) if argv is not None else None


def event(image="/usr/bin/true", argv=("true",), cwd="/root", cwd_ok=True, uid=0, auid=0, pid=100,
          ppid=99, sha256=None, parent=P(), truncated=False) -> Event:
    values = {"id": 1, "run_id": 1, "event": fields.EXEC, "time_ns": 1, "pid": pid, "ppid": ppid,
              "uid": uid, "auid": auid, "start_ns": 1, "filename": image,
              "argv": "\0".join(argv).encode() if argv is not None else None,
              "args_truncated": truncated, "cwd": cwd.encode() if cwd else None, "cwd_status": cwd_ok,
              "sha256": sha256.encode() if sha256 else None, "duration_ns": None,
              "parent_start_ns": None}
    row = tuple(values[name] for name, _ in COLUMNS)
    return Event(row, Users(), lambda ev: parent)


RULE = """title: {title}
id: {id}
status: test
author: tests
logsource:
    product: linux
    category: process_creation
detection:
{detection}
level: medium
"""


def load_text(tmp_path, detection: str, title="t", rid="11111111-1111-4111-8111-111111111111",
              logsource=None) -> rules.RuleSet:
    text = RULE.format(title=title, id=rid, detection=detection)
    if logsource is not None:
        text = text.replace("    product: linux\n    category: process_creation\n", logsource)
    path = tmp_path / f"r{len(list(tmp_path.glob('*.yml')))}.yml"
    path.write_text(text)
    return rules.load([path], bundled=False)


def one(tmp_path, detection: str) -> rules.Rule:
    rs = load_text(tmp_path, detection)
    assert rs.problems == [] and len(rs.rules) == 1, rs.problems
    rule = rs.rules[0]
    assert rule.evaluable, rule.why_not
    return rule


class TestSemantics:
    @pytest.mark.parametrize("detection,yes,no", [
        # strings are case-insensitive, both ways
        ("    s:\n        Image|endswith: '/WHOAMI'\n    condition: s", "/usr/bin/whoami", "/usr/bin/whoami2"),
        ("    s:\n        Image: '/usr/bin/Id'\n    condition: s", "/USR/BIN/ID", "/usr/bin/idx"),
        ("    s:\n        Image|startswith: '/TMP/'\n    condition: s", "/tmp/x", "/var/tmp/x"),
        ("    s:\n        Image|contains: '/Cache/'\n    condition: s", "/home/a/CACHE/x", "/home/a/.cache/x"),
        # wildcards in plain values: * any run, ? one character; \\* a literal star
        ("    s:\n        Image: '/usr/*/c?t'\n    condition: s", "/usr/local/bin/cat", "/usr/bin/chat"),
        ("    s:\n        Image: '/opt/a\\*b'\n    condition: s", "/opt/a*b", "/opt/axb"),
        ("    s:\n        Image: '*'\n    condition: s", "/anything", None),
    ])
    def test_image_strings(self, tmp_path, detection, yes, no):
        """Sigma strings: case-insensitive, * and ? wildcards, an escaped star is a star."""
        rule = one(tmp_path, detection)
        assert rule.match(event(image=yes))
        if no is not None:
            assert not rule.match(event(image=no))

    def test_command_line_is_argv_joined_with_spaces(self, tmp_path):
        """CommandLine is the arguments joined by one space, unquoted (Sysmon for Linux)."""
        rule = one(tmp_path, "    s:\n        CommandLine: 'sh -c echo a b'\n    condition: s")
        assert rule.match(event(argv=("sh", "-c", "echo a b")))
        assert not rule.match(event(argv=("sh", "-c", "echo  a b")))

    def test_contains_all_needs_every_value(self, tmp_path):
        rule = one(tmp_path, "    s:\n        CommandLine|contains|all: ['-a', '-b']\n    condition: s")
        assert rule.match(event(argv=("x", "-b", "-a")))
        assert not rule.match(event(argv=("x", "-a")))

    def test_re_is_case_sensitive_and_unanchored_unless_i(self, tmp_path):
        """re: searched anywhere in the value, case-sensitive; re|i ignores case."""
        rule = one(tmp_path, "    s:\n        CommandLine|re: '\\s-O\\s'\n    condition: s")
        assert rule.match(event(argv=("wget", "-O", "f", "u")))
        assert not rule.match(event(argv=("wget", "-o", "f", "u")))
        rule = one(tmp_path, "    s:\n        CommandLine|re|i: '^WGET .*-o'\n    condition: s")
        assert rule.match(event(argv=("wget", "x", "-O")))

    def test_unknown_value_never_turns_a_not_filter_into_a_miss(self, tmp_path):
        """With the parent unknown, `selection and not filter` on ParentImage fires (the filter
        cannot hold for an unknown value), and the event says ParentImage was unknown."""
        rule = one(tmp_path, "    selection:\n        Image|endswith: /curl\n    filter:\n"
                             "        ParentImage|endswith: /apt\n    condition: selection and not filter")
        unknown = event(image="/usr/bin/curl", parent=P())
        assert rule.match(unknown)
        assert unknown.unknown(rule.fields) == ["ParentImage"]
        assert not rule.match(event(image="/usr/bin/curl", parent=P("/usr/bin/apt", ["apt"])))
        assert rule.match(event(image="/usr/bin/curl", parent=P("/usr/bin/bash", ["bash"])))

    def test_null_and_exists(self, tmp_path):
        """null matches an unknown value only; exists says whether there is one."""
        rule = one(tmp_path, "    s:\n        CurrentDirectory: null\n    condition: s")
        assert rule.match(event(cwd=None)) and rule.match(event(cwd="/x", cwd_ok=False))
        assert not rule.match(event(cwd="/x"))
        rule = one(tmp_path, "    s:\n        Hashes|exists: true\n    condition: s")
        assert rule.match(event(sha256="ab" * 32)) and not rule.match(event())

    def test_numbers_and_comparisons(self, tmp_path):
        """A number equals a numeric field (LogonId: 0); gt/lt compare numbers."""
        rule = one(tmp_path, "    s:\n        LogonId: 0\n    condition: s")
        assert rule.match(event(auid=0)) and not rule.match(event(auid=4294967295))
        rule = one(tmp_path, "    s:\n        ProcessId|gt: 1000\n        ParentProcessId|lte: 1\n"
                             "    condition: s")
        assert rule.match(event(pid=1001, ppid=1)) and not rule.match(event(pid=1000, ppid=1))

    def test_user_hashes_and_cwd(self, tmp_path):
        """User is the uid's name here; Hashes is SHA256=<HEX>; CurrentDirectory the cwd when
        recorded whole (a truncated one is unknown)."""
        rule = one(tmp_path, "    s:\n        User: ROOT\n        Hashes: 'sha256=" + "AB" * 32 +
                   "'\n        CurrentDirectory|endswith: /srv\n    condition: s")
        assert rule.match(event(uid=0, sha256="ab" * 32, cwd="/srv"))
        assert not rule.match(event(uid=0, sha256="ab" * 32, cwd="/srv", cwd_ok=False))
        assert not rule.match(event(uid=65534, sha256="ab" * 32, cwd="/srv"))

    def test_expansions_and_field_references(self, tmp_path):
        """windash's values are any of the dash forms; fieldref compares two fields."""
        rule = one(tmp_path, "    s:\n        CommandLine|windash|contains: ' -x '\n    condition: s")
        assert rule.match(event(argv=("a", "/x", "b"))) and rule.match(event(argv=("a", "-x", "b")))
        rule = one(tmp_path, "    s:\n        Image|fieldref: ParentImage\n    condition: s")
        assert rule.match(event(image="/bin/sh", parent=P("/BIN/SH", ["sh"])))
        assert not rule.match(event(image="/bin/sh", parent=P()))

    def test_condition_forms(self, tmp_path):
        """1 of / all of patterns, parentheses, and a list of conditions (any of them)."""
        rule = one(tmp_path, "    sel_a:\n        Image|endswith: /a\n    sel_b:\n        CommandLine|contains: b\n"
                             "    condition:\n        - all of sel_*\n        - 1 of sel_* and not sel_b")
        assert rule.match(event(image="/a", argv=("b",)))
        assert rule.match(event(image="/a", argv=("c",)))
        assert not rule.match(event(image="/x", argv=("b",)))

    @pytest.mark.parametrize("detection,why", [
        ("    s:\n        OriginalFileName: x\n    condition: s", "field OriginalFileName is not recorded"),
        ("    s:\n        Image|cidr: 10.0.0.0/8\n    condition: s", "cidr"),
        ("    s:\n        - evil\n    condition: s", "a keyword"),
        ("    s:\n        Image|expand: '%Admins%'\n    condition: s", "placeholder %Admins%"),
    ])
    def test_what_cannot_be_evaluated_is_kept_with_its_reason(self, tmp_path, detection, why):
        """A rule reading a field we do not record, cidr, a keyword or a placeholder loads, is
        not evaluated, and says why (hunt --list shows it)."""
        rs = load_text(tmp_path, detection)
        assert len(rs.rules) == 1 and not rs.rules[0].evaluable
        assert why in rs.rules[0].why_not
        status, out, _ = cli_in_process("hunt", "--list", "--no-bundled", "--rules", tmp_path)
        assert status == 0 and f"not evaluated: {rs.rules[0].why_not}" in out

    def test_bad_files_are_named_and_others_still_load(self, tmp_path):
        """A file that is not YAML, or not a valid rule, is a problem naming the file and why;
        the other rules load; a rule for another log source is skipped with its reason; a
        user's rule with a bundled rule's id replaces it."""
        (tmp_path / "broken.yml").write_text("title: [unclosed\n")
        (tmp_path / "nocond.yml").write_text(RULE.format(title="x", id="22222222-2222-4222-8222-222222222222",
                                                         detection="    s:\n        Image: x"))
        load_text(tmp_path, "    s:\n        Image: x\n    condition: s", rid="33333333-3333-4333-8333-333333333333",
                  logsource="    product: windows\n    category: process_creation\n")
        bundled_id = next(r.id for r in rules.load().rules)
        load_text(tmp_path, "    s:\n        Image: x\n    condition: s", rid=bundled_id)
        rs = rules.load([tmp_path])
        assert {p.path.name for p in rs.problems} == {"broken.yml", "nocond.yml"}
        assert all(p.reason for p in rs.problems)
        assert [p.reason for p in rs.skipped] == ["logsource windows/process_creation/-: hunt runs "
                                                  "linux process_creation rules"]
        replaced = [r for r in rs.rules if r.id == bundled_id]
        assert [(r.bundled, r.replaced, r.evaluable) for r in replaced] == [(True, True, False),
                                                                            (False, False, True)]


# --- the prefilter against the matcher ----------------------------------------------------

def _literals(rule) -> dict:
    """The literals a rule tests, per (field, kind), from its condition tree."""
    out: dict = {}

    def walk(node):
        if node.op == "test":
            if node.kind in ("eq", "startswith", "endswith", "contains") and isinstance(node.value, str):
                out.setdefault((node.field, node.kind), []).append(node.value)
            return
        for k in node.kids:
            walk(k)
    from sigma.collection import SigmaCollection

    for parsed in SigmaCollection.from_yaml(rule.path.read_text()).rules:
        for cond in parsed.detection.parsed_condition:
            walk(matcher.node_of(cond.parse()))
    return out


def test_prefilter_never_hides_a_match_of_any_bundled_rule():
    """Events built from a bundled rule's own literals (executable, command line, parent,
    working directory), with another rule's mixed in: every rule that matches one is among the
    prefilter's candidates for it. Most rules match some event, so the check is not vacuous."""
    rs = rules.load().evaluable()
    pre = Prefilter(rs)
    per_rule = [_literals(r) for r in rs]
    rng = random.Random(22)

    def some(lits, field, kinds, most=3):
        pool = [v for k in kinds for v in lits.get((field, k), ())]
        return rng.sample(pool, rng.randint(1, min(most, len(pool)))) if pool else []

    matched = set()
    for _ in range(20_000):
        lits = rng.choice(per_rule)
        other = rng.choice(per_rule)
        if rng.random() < 0.2 and lits.get(("Image", "eq")):
            image = rng.choice(lits[("Image", "eq")])
        else:
            image = ("".join(some(lits, "Image", ("startswith",), 1)) or rng.choice(["/usr/bin", "/tmp/x"])) + \
                "".join(some(lits, "Image", ("contains",))) + "".join(some(lits, "Image", ("endswith",), 1))
        words = (some(lits, "CommandLine", ("startswith",), 1) + some(lits, "CommandLine", ("contains",), 6)
                 + some(other, "CommandLine", ("contains",), 2) + some(lits, "CommandLine", ("endswith",), 1))
        if rng.random() < 0.1 and lits.get(("CommandLine", "eq")):
            words = [rng.choice(lits[("CommandLine", "eq")])]
        argv = tuple(" ".join(words).split(" ")) if words else ("x",)
        parent = P("".join(some(lits, "ParentImage", ("startswith",), 1)) + "/x" +
                   "".join(some(lits, "ParentImage", ("contains", "endswith"), 1)),
                   tuple(some(lits, "ParentCommandLine", ("contains",), 4)) or ("bash",))
        cwd = "".join(some(lits, "CurrentDirectory", ("contains", "endswith"), 1)) or "/tmp"
        ev = event(image=image, argv=argv, parent=parent, cwd=cwd, uid=rng.choice([0, 1000]))
        candidates = set(map(id, pre.candidates(ev)))
        for rule in rs:
            if rule.match(ev):
                matched.add(rule.name)
                assert id(rule) in candidates, (rule.name, image, argv)
    assert len(matched) >= 120, len(matched)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=12).filter(lambda b: b"\0" not in b), min_size=1, max_size=6))
def test_command_line_is_the_arguments_query_shows_joined(args):
    """CommandLine from the raw argv bytes is query's argv (bytes not UTF-8 escaped) joined by
    spaces: one decoding of the arguments everywhere."""
    blob = b"\0".join(args)
    assert command_line(blob) == " ".join(split_argv(blob))
    assert event(argv=None).cmd is None


def test_parent_fields_are_asked_only_when_the_rest_holds(tmp_path):
    """An and evaluates the parent's fields last: a record whose own fields fail never costs a
    parent lookup."""
    asked = []

    def find(ev):
        asked.append(ev)
        return P("/usr/bin/java", ["java"])

    rule = one(tmp_path, "    s:\n        ParentImage|endswith: /java\n        Image|endswith: /sh\n"
                         "    condition: s")
    values = {name: None for name, _ in COLUMNS}
    values.update(filename="/usr/bin/ls", argv=b"ls", event=fields.EXEC)
    ev = Event(tuple(values[name] for name, _ in COLUMNS), Users(), find)
    assert not rule.match(ev) and asked == []
    values.update(filename="/bin/sh")
    ev = Event(tuple(values[name] for name, _ in COLUMNS), Users(), find)
    assert rule.match(ev) and len(asked) == 1


def test_a_prefilter_that_hides_a_match_is_caught(tmp_path):
    """The check above fails for a prefilter whose atom does not follow from its rule: a rule
    on /whoami indexed under /nothing matches an event it is no candidate for."""
    rule = one(tmp_path, "    s:\n        Image|endswith: /whoami\n    condition: s")
    rule.needs = [("Image", "endswith", "/nothing")]
    ev = event(image="/usr/bin/whoami")
    assert rule.match(ev) and rule not in Prefilter([rule]).candidates(ev)
