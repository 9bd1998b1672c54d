"""Which rules can match an event, from its Image and CommandLine alone, cheaply
(docs/design.md, "Hunt: the prefilter").

Each rule's ``needs`` (matcher.Node.needs) is a set of atoms, a literal test on Image or
CommandLine, one of which holds whenever the rule matches; the index answers for all rules at
once. Only the rules it returns are evaluated, by the rules' own matcher: the prefilter never
decides a match, it only spares the rules that cannot match (held to the matcher by
tests/test_hunt_rules.py on every bundled rule). An atom may be replaced by a weaker one it
implies (``Image|endswith: /bin/bash`` by the base name ``/bash``), never by a stronger.

- ``Image|endswith: /name``, most atoms: one dictionary lookup of the executable's base name;
  an Image suffix without a slash is tested as a substring;
- ``contains``: all literals of a field in one regular expression built as a trie, each match
  a lookahead, so every literal found at every position is known from one scan (a literal that
  starts where a longer one matched is its prefix: both are counted);
- ``eq`` and ``startswith``: a lookup per distinct literal length.

The rules that may match are the bits of an int; an event's bits depend on its two lowered
strings only, so they are kept for the last MEMO pairs seen (command lines repeat).
"""

from __future__ import annotations

import re

from .fields import EAGER

MEMO = 1 << 16  # (image, command line) pairs whose rules are kept


def _add(table: dict, key, bit: int) -> None:
    table[key] = table.get(key, 0) | bit


def _trie_pattern(literals) -> str:
    """A regular expression that matches the longest of ``literals`` that starts at a position
    (a trie: one branch per next character, so a position costs a few comparisons, not one
    per literal)."""
    trie: dict = {}
    for lit in literals:
        node = trie
        for ch in lit:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = [re.escape(ch) + build(node[ch]) for ch in sorted(k for k in node if k)]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body
    return build(trie)


class _Contains:
    """The rules of the ``contains`` literals of one field, found in one scan of its value."""

    def __init__(self, bits_of: dict):
        lits = [lit for lit in bits_of if lit]
        self.always = bits_of.get("", 0)  # an empty literal is in every value
        # each literal's rules, and those of every shorter literal that is its prefix (found at
        # the same position, but the trie reports the longest)
        self.bits = {lit: 0 for lit in lits}
        for lit in lits:
            for other in lits:
                if lit.startswith(other):
                    self.bits[lit] |= bits_of[other]
        self.rx = re.compile(f"(?=({_trie_pattern(lits)}))", re.DOTALL) if lits else None

    def mask(self, value: str) -> int:
        found = self.always
        if self.rx is not None:
            bits = self.bits
            for m in self.rx.finditer(value):
                lit = m.group(1)
                if lit:
                    found |= bits[lit]
        return found


class Prefilter:
    def __init__(self, rules: list):
        self.rules = list(rules)
        self.always = 0  # rules without atoms: every event is theirs
        eq = {f: {} for f in EAGER}
        starts = {f: {} for f in EAGER}
        contains = {f: {} for f in EAGER}
        self._base: dict = {}  # Image|endswith: ".../name": by the base name with its slash
        for i, rule in enumerate(self.rules):
            bit = 1 << i
            if rule.needs is None:
                self.always |= bit
                continue
            for field, kind, lit in rule.needs:
                if kind == "endswith" and field == "Image" and "/" in lit:
                    _add(self._base, lit[lit.rfind("/"):], bit)
                elif kind == "endswith":  # weakened: a suffix is a substring
                    _add(contains[field], lit, bit)
                elif kind == "eq":
                    _add(eq[field], lit, bit)
                elif kind == "contains":
                    _add(contains[field], lit, bit)
                else:
                    _add(starts[field].setdefault(len(lit), {}), lit, bit)
        self._plan = [(f == "Image", eq[f], sorted(starts[f].items()), _Contains(contains[f]))
                      for f in EAGER]
        self._memo: dict = {}
        self._lists: dict = {}

    def mask(self, ev) -> int:
        """The rules that may match ``ev`` (a fields.Event), as bits."""
        key = (ev.image_l, ev.cmd_l)
        found = self._memo.get(key)
        if found is not None:
            return found
        found = self.always
        image = ev.image_l
        if image is not None:
            cut = image.rfind("/")
            if cut >= 0:
                found |= self._base.get(image[cut:], 0)
        for is_image, eq, starts, contains in self._plan:
            value = image if is_image else ev.cmd_l
            if value is None:
                continue
            found |= eq.get(value, 0)
            for length, lits in starts:
                found |= lits.get(value[:length], 0)
            found |= contains.mask(value)
        if len(self._memo) >= MEMO:
            self._memo.clear()
        self._memo[key] = found
        return found

    def candidates(self, ev) -> list:
        """The rules that may match ``ev``, in the rules' order."""
        mask = self.mask(ev)
        out = self._lists.get(mask)
        if out is None:
            out = []
            rules = self.rules
            bits = mask
            while bits:
                low = bits & -bits
                out.append(rules[low.bit_length() - 1])
                bits ^= low
            if len(self._lists) < MEMO:
                self._lists[mask] = out
        return out
