"""A Sigma rule's condition as hunt evaluates it (docs/design.md, "Hunt: Sigma semantics"):
pySigma's condition tree (after parse(): and, or, not over field = value, modifiers applied)
as Nodes; a Node as one Python expression compiled into the rule's one matching function; and
the atoms the prefilter indexes (hunt/prefilter.py, "Hunt: the prefilter").

Sigma's semantics: strings case-insensitive (both sides lowered), ``*`` and ``?`` wildcards,
``re`` case-sensitive and unanchored (``re.search``) unless its ``i`` flag, a value that is not
known (None) matching nothing, so that ``not filter`` holds for it. What cannot be compared
here (a field we do not record, cidr, placeholders, keywords) raises Unsupported with why.
"""

from __future__ import annotations

import re
from typing import Callable

from .fields import EAGER, FIELDS, PARENT_FIELDS


class Unsupported(Exception):
    """A rule that parses but cannot be evaluated here: the message says why."""


# how much a test costs, roughly: an and/or tries the cheaper first, so the parent's fields
# (queries) are asked for only when everything else already holds
_COST = {"eq": 1, "startswith": 1, "endswith": 1, "contains": 2, "any": 1, "null": 1, "exists": 1,
         "glob": 4, "number": 1, "compare": 1, "re": 8, "fieldref": 3, "any_eq": 1,
         "any_startswith": 1, "any_endswith": 1, "any_contains": 3}
_FIELD_COST = {"Image": 0, "CommandLine": 0}
_OTHER_FIELD_COST = 3
_PARENT_COST = 100


class Node:
    """One node of a rule's condition: ``and``/``or``/``not`` over ``kids``, or a ``test`` of
    one field (``field``, ``kind``, ``value``)."""

    __slots__ = ("op", "kids", "field", "kind", "value", "cased")

    def __init__(self, op: str, kids=(), field=None, kind=None, value=None, cased=False):
        self.op, self.kids = op, list(kids)
        self.field, self.kind, self.value, self.cased = field, kind, value, cased

    def fields(self) -> set:
        if self.op == "test":
            return {self.field} | ({self.value[0]} if self.kind == "fieldref" else set())
        return set().union(*(k.fields() for k in self.kids)) if self.kids else set()

    def cost(self) -> int:
        if self.op != "test":
            return sum(k.cost() for k in self.kids)
        fields = self.fields()
        extra = max(_PARENT_COST if f in PARENT_FIELDS else _FIELD_COST.get(f, _OTHER_FIELD_COST)
                    for f in fields)
        return _COST[self.kind] + extra

    # -- evaluation -----------------------------------------------------------

    def compile(self) -> Callable:
        """A function Event -> bool with the node's meaning: the node written as one Python
        expression (_Source), its literals and patterns passed in as constants, never written
        into the source. One function call per rule and record, where a function per test
        made most of a hunt's time."""
        src = _Source()
        expr = self.source(src)
        params = "".join(f", {name}={name}" for name in src.consts)
        code = f"def match(ev{params}):\n    return bool({expr})\n"
        scope = dict(src.consts)
        exec(compile(code, "<sigma rule>", "exec"), scope)  # noqa: S102 - our own expression
        return scope["match"]

    def source(self, src: "_Source") -> str:
        """The node as a Python expression over ``ev`` (an Event)."""
        if self.op == "test":
            return _test_source(self, src)
        kids = self.kids if self.op != "or" else _merge_alternatives(self.kids)
        # cheaper first; in an and, a not last: a filter mostly holds, a selection mostly fails
        order = (lambda k: (k.op == "not", k.cost())) if self.op == "and" else Node.cost
        parts = [k.source(src) for k in sorted(kids, key=order)]
        if self.op == "not":
            return f"(not {parts[0]})"
        return "(" + f" {self.op} ".join(parts) + ")"

    # -- the prefilter's atoms --------------------------------------------------

    def needs(self) -> list | None:
        """Atoms (field, kind, lower-case literal) on Image or CommandLine, one of which holds
        for every event the node matches; None when no such set is known (a ``not``, a field
        the prefilter does not read, a regular expression). An ``and`` needs what its most
        selective part needs, an ``or`` what any of its parts needs."""
        if self.op == "test":
            return _atom(self)
        if self.op == "not":
            return None
        found = [k.needs() for k in self.kids]
        if self.op == "or":
            if any(f is None for f in found):
                return None
            return [a for f in found for a in f]
        known = [f for f in found if f is not None]
        return min(known, key=_selectivity) if known else None


# tests of one field that an or can make one test of: Image|endswith: [a list] is one
# str.endswith with a tuple, not a function call per value
_MERGEABLE = ("eq", "startswith", "endswith", "contains")


def _merge_alternatives(kids: list) -> list:
    """The parts of an or, tests of one field, kind and case merged into one test whose value
    is the tuple of theirs (kind ``any_<kind>``); the order of the rest kept."""
    groups: dict = {}
    out: list = []
    for k in kids:
        if k.op == "test" and k.kind in _MERGEABLE:
            key = (k.field, k.kind, k.cased)
            if key not in groups:
                groups[key] = Node("test", field=k.field, kind="any_" + k.kind, value=[], cased=k.cased)
                out.append(groups[key])
            groups[key].value.append(k.value)
        else:
            out.append(k)
    for g in groups.values():
        if len(g.value) == 1:  # nothing merged: the plain test
            g.kind, g.value = g.kind[len("any_"):], g.value[0]
        else:
            g.value = tuple(dict.fromkeys(g.value))
    return out


def _selectivity(atoms: list) -> tuple:
    """Smaller is better: atoms on the executable before the command line, few of them, and
    long literals (a short one matches more records)."""
    on_cmd = sum(1 for f, _, _ in atoms if f == "CommandLine")
    shortest = min((len(lit) for _, _, lit in atoms), default=0)
    return (on_cmd, len(atoms), -shortest)


def node_of(item) -> Node:
    """A pySigma condition item (after parse()) as a Node."""
    kind = type(item).__name__
    if kind in ("ConditionAND", "ConditionOR", "ConditionNOT"):
        op = kind[len("Condition"):].lower()
        return Node(op, [node_of(a) for a in item.args])
    if kind == "ConditionFieldEqualsValueExpression":
        if item.field not in FIELDS:
            raise Unsupported(f"field {item.field} is not recorded (hunt has "
                              f"{', '.join(FIELDS)})")
        return _value_node(item.field, item.value)
    if kind == "ConditionValueExpression":
        raise Unsupported("a keyword (a value without a field): hunt matches fields, not an "
                          "event's whole text")
    raise Unsupported(f"condition element {kind}")


def _value_node(field: str, value) -> Node:
    from sigma import types as st

    if isinstance(value, st.SigmaExpansion):  # windash, base64offset: any of the values
        return Node("or", [_value_node(field, v) for v in value.values])
    if isinstance(value, st.SigmaString):
        cased = isinstance(value, st.SigmaCasedString)
        return Node("test", field=field, cased=cased, **_string_test(value, cased))
    if isinstance(value, st.SigmaRegularExpression):
        flags = 0
        for f in value.flags:
            flags |= st.SigmaRegularExpression.sigma_to_python_flags[f]
        return Node("test", field=field, kind="re", value=re.compile(str(value.regexp), flags))
    if isinstance(value, st.SigmaCompareExpression):
        return Node("test", field=field, kind="compare", value=(value.op.name, value.number.number))
    if isinstance(value, st.SigmaBool):
        raise Unsupported(f"{field}: a boolean value (no field of ours is true or false)")
    if isinstance(value, st.SigmaNumber):
        return Node("test", field=field, kind="number", value=str(value.number).lower())
    if isinstance(value, st.SigmaNull):
        return Node("test", field=field, kind="null")
    if isinstance(value, st.SigmaExists):
        return Node("test", field=field, kind="exists", value=bool(value.exists))
    if isinstance(value, st.SigmaFieldReference):
        if value.field not in FIELDS:
            raise Unsupported(f"fieldref {value.field}: the field is not recorded")
        how = "startswith" if value.starts_with else "endswith" if value.ends_with else "eq"
        return Node("test", field=field, kind="fieldref", value=(value.field, how))
    if isinstance(value, st.SigmaCIDRExpression):
        raise Unsupported(f"{field}|cidr: no field of ours holds an address")
    raise Unsupported(f"{field}: a value of type {type(value).__name__}")


def _string_test(value, cased: bool) -> dict:
    """kind and value of the test of a Sigma string: eq, startswith, endswith, contains, any
    (``*``: any known value), or glob (a compiled regular expression, matched whole)."""
    from sigma import types as st

    parts = []
    for p in value.iter_parts():
        if isinstance(p, st.Placeholder):
            raise Unsupported(f"placeholder %{p.name}% (expand): hunt has no values for it")
        if isinstance(p, str):
            p = p if cased else p.lower()
            if parts and isinstance(parts[-1], str):
                parts[-1] += p
                continue
        elif p is st.SpecialChars.WILDCARD_MULTI and parts and parts[-1] is p:
            continue  # ** is *
        parts.append(p)
    star = st.SpecialChars.WILDCARD_MULTI
    lits = [p for p in parts if isinstance(p, str)]
    if not parts:
        return {"kind": "eq", "value": ""}
    if all(p is star for p in parts):
        return {"kind": "any", "value": None}
    if len(parts) == 1 and lits:
        return {"kind": "eq", "value": lits[0]}
    if len(parts) == 2 and parts[0] is star and lits:
        return {"kind": "endswith", "value": lits[0]}
    if len(parts) == 2 and parts[1] is star and lits:
        return {"kind": "startswith", "value": lits[0]}
    if len(parts) == 3 and parts[0] is star and parts[2] is star and lits:
        return {"kind": "contains", "value": lits[0]}
    pattern = "".join(re.escape(p) if isinstance(p, str) else ".*" if p is star else "."
                      for p in parts)
    return {"kind": "glob", "value": (re.compile(pattern, re.DOTALL), parts)}


class _Source:
    """The constants an expression refers to (``_c0``, ``_c1``...), and fresh names for the
    values it tests (``_x0``...)."""

    def __init__(self):
        self.consts: dict[str, object] = {}
        self.names = 0

    def const(self, value) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def name(self) -> str:
        self.names += 1
        return f"_x{self.names}"


# fields read as event attributes or methods, lowered (Image and CommandLine for every record)
_LOWER_EXPR = {"Image": "ev.image_l", "CommandLine": "ev.cmd_l",
               "ParentImage": "ev.parent_image_l()", "ParentCommandLine": "ev.parent_cmd_l()"}


# the same, as recorded (a regular expression is matched on the value's own case)
_RAW_EXPR = {"Image": "ev.image", "CommandLine": "ev.cmd"}


def _cased_text(ev, field):
    x = ev.get(field)
    return None if x is None else str(x)


def _test_source(node: Node, src: _Source) -> str:
    """One field test as an expression; the tests that are not a comparison of one value with
    literals (compare, fieldref) call their function (_test)."""
    f, kind, v = node.field, node.kind, node.value
    if kind in ("compare", "fieldref"):
        return f"{src.const(_test(node))}(ev)"
    if node.cased:
        text = f"{src.const(_cased_text)}(ev, {src.const(f)})"
    else:
        text = _LOWER_EXPR.get(f) or f"ev.lower({src.const(f)})"
    if kind == "eq":
        return f"({text} == {src.const(v)})"
    if kind == "any_eq":
        return f"({text} in {src.const(frozenset(v))})"
    if kind == "any" or (kind == "exists" and v):
        return f"(ev.get({src.const(f)}) is not None)"
    if kind in ("null", "exists"):
        return f"(ev.get({src.const(f)}) is None)"
    if kind == "number":
        return f"(ev.lower({src.const(f)}) == {src.const(v)})"
    x = src.name()
    known = f"({x} := {text}) is not None"
    if kind in ("startswith", "any_startswith", "endswith", "any_endswith"):
        method = "startswith" if "startswith" in kind else "endswith"
        return f"({known} and {x}.{method}({src.const(v)}))"
    if kind == "contains":
        return f"({known} and {src.const(v)} in {x})"
    if kind == "any_contains":
        return f"({known} and (" + " or ".join(f"{src.const(lit)} in {x}" for lit in v) + "))"
    if kind == "glob":
        return f"({known} and {src.const(v[0])}.fullmatch({x}) is not None)"
    if kind == "re":
        x = src.name()
        raw = _RAW_EXPR.get(f) or f"ev.get({src.const(f)})"
        return f"(({x} := {raw}) is not None and {src.const(v)}.search(str({x})) is not None)"
    raise AssertionError(kind)


def _test(node: Node) -> Callable:
    """The function of a test that is no comparison of one value with literals: a number
    compared (gt, lte...), or a field compared with another (fieldref)."""
    f, kind, v = node.field, node.kind, node.value
    if kind == "compare":
        op, n = v
        cmp = {"LT": n.__gt__, "LTE": n.__ge__, "GT": n.__lt__, "GTE": n.__le__,
               "NEQ": n.__ne__}[op]

        def compare(ev):
            x = ev.get(f)
            if isinstance(x, str):
                try:
                    x = int(x, 10)
                except ValueError:
                    return False
            return x is not None and cmp(x) is True
        return compare
    if kind == "fieldref":
        other, how = v

        def ref(ev):
            a, b = ev.lower(f), ev.lower(other)
            if a is None or b is None:
                return False
            return a == b if how == "eq" else a.startswith(b) if how == "startswith" else a.endswith(b)
        return ref
    raise AssertionError(kind)


def _atom(node: Node) -> list | None:
    """The prefilter atom of one test, when it has one: a case-insensitive literal test on
    Image or CommandLine (a cased one's is not sound: lower() can change a string's length)."""
    if node.field not in EAGER or node.cased:
        return None
    kind, v = node.kind, node.value
    if kind in ("eq", "startswith", "endswith", "contains"):
        return [(node.field, kind, v)]
    if kind == "glob":
        parts = v[1]
        if isinstance(parts[0], str):
            return [(node.field, "startswith", parts[0])]
        if isinstance(parts[-1], str):
            return [(node.field, "endswith", parts[-1])]
        longest = max((p for p in parts if isinstance(p, str)), key=len, default="")
        return [(node.field, "contains", longest)] if longest else None
    return None
