"""Sigma rules for hunt: the bundled ones and a user's, read and parsed with pySigma, each
compiled into its matching function (hunt/matcher.py) or kept with the reason it cannot be
(docs/design.md, "Hunt").

pySigma gives each rule's condition as a tree (and, or, not over field = value), its modifiers
already applied: ``contains`` is ``*value*``, ``all`` an and, ``windash`` and ``base64offset``
the values they expand to, ``re`` a regular expression. A rule that reads a field we do not
record, or uses a value type we cannot compare (cidr, placeholders, keywords), is kept with the
reason it cannot be evaluated, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from .fields import PARENT_FIELDS
from .matcher import Node, Unsupported, node_of

BUNDLED = Path(__file__).resolve().parent / "sigma"
LEVELS = ("informational", "low", "medium", "high", "critical")
RULE_SUFFIXES = (".yml", ".yaml")
# what the rules are written for: a rule for other log sources is not hunt's
CATEGORY, PRODUCT = "process_creation", "linux"


@dataclass
class Rule:
    title: str
    path: Path
    bundled: bool
    id: str | None = None
    level: str | None = None
    status: str | None = None
    author: str | None = None
    description: str | None = None
    tags: tuple = ()
    references: tuple = ()
    fields: frozenset = frozenset()  # the Sigma fields it reads
    field_list: tuple = ()  # the same, sorted (a finding shows their values in this order)
    why_not: str | None = None  # why it cannot be evaluated; None: it can
    match: Callable | None = None  # Event -> bool
    needs: list | None = None  # prefilter atoms, one of which a match implies; None: any record
    replaced: bool = False  # a bundled rule a --rules file of the same id replaces

    @property
    def evaluable(self) -> bool:
        return self.why_not is None and not self.replaced

    @property
    def name(self) -> str:
        """The file's name without its suffix: a second handle on a rule, besides its id."""
        return self.path.stem

    def reads_parent(self) -> bool:
        return bool(self.fields & PARENT_FIELDS)


@dataclass
class Problem:
    """A file that gave no rule: it did not parse, or it is no rule hunt can use."""

    path: Path
    reason: str


@dataclass
class RuleSet:
    rules: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # files that did not parse (bad input)
    skipped: list = field(default_factory=list)  # rules for other log sources (Problem)

    def evaluable(self) -> list[Rule]:
        return [r for r in self.rules if r.evaluable]


# --- loading ---------------------------------------------------------------

def rule_files(paths) -> list[tuple[Path, bool]]:
    """(file, bundled) for the bundled rules and each of ``paths`` (a file, or a directory
    searched for *.yml and *.yaml), in a stable order. BadInput for a path that is neither."""
    files = [(p, True) for p in sorted(BUNDLED.rglob("*.yml"))]
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += [(p, False) for p in sorted(path.rglob("*"))
                      if p.suffix in RULE_SUFFIXES and p.is_file()]
        elif path.is_file():
            files.append((path, False))
        else:
            raise BadInput(f"bad --rules {path}: no such file or directory")
    return files


def load(paths=(), bundled: bool = True) -> RuleSet:
    """The rules of the bundled set (unless ``bundled`` is False) and of ``paths``. A file that
    does not parse is a Problem (its path and why), a rule for another log source is skipped,
    and the others load; a user's rule with the id of a bundled one replaces it."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    out = RuleSet()
    for path, is_bundled in rule_files(paths):
        if is_bundled and not bundled:
            continue
        try:
            text = path.read_text(encoding="utf-8")
            collection = SigmaCollection.from_yaml(text)
        except (OSError, UnicodeDecodeError) as e:
            out.problems.append(Problem(path, f"cannot read it: {getattr(e, 'strerror', None) or e}"))
            continue
        except SigmaError as e:
            out.problems.append(Problem(path, _one_line(str(e))))
            continue
        except Exception as e:  # noqa: BLE001 - YAML's errors and anything pySigma lets through
            out.problems.append(Problem(path, _one_line(f"{type(e).__name__}: {e}")))
            continue
        if not collection.rules:
            out.problems.append(Problem(path, "no rule in it"))
        for parsed in collection.rules:
            rule = _rule(parsed, path, is_bundled)
            if rule is None:
                out.skipped.append(Problem(path, _skip_reason(parsed)))
            else:
                out.rules.append(rule)
    ids = {r.id for r in out.rules if not r.bundled and r.id}
    for r in out.rules:
        if r.bundled and r.id in ids:
            r.replaced = True
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _skip_reason(parsed) -> str:
    kind = type(parsed).__name__
    if kind != "SigmaRule":
        return f"a {kind.replace('Sigma', 'Sigma ').lower()}, not a detection rule"
    ls = parsed.logsource
    return (f"logsource {ls.product or '-'}/{ls.category or '-'}/{ls.service or '-'}: hunt runs "
            f"{PRODUCT} {CATEGORY} rules")


def _rule(parsed, path: Path, bundled: bool) -> Rule | None:
    """The Rule of a parsed pySigma rule, compiled (or with the reason it cannot be); None
    when it is not a Linux process_creation detection rule."""
    if type(parsed).__name__ != "SigmaRule":
        return None
    ls = parsed.logsource
    # a log source names what it needs; fewer attributes apply more widely (Sigma), so a rule
    # for any product's process creations is hunt's too, but not one for a service
    if ls.category != CATEGORY or ls.product not in (None, PRODUCT) or ls.service is not None:
        return None
    rule = Rule(
        title=parsed.title or path.stem, path=path, bundled=bundled,
        id=str(parsed.id) if parsed.id is not None else None,
        level=str(parsed.level) if parsed.level is not None else None,
        status=str(parsed.status) if parsed.status is not None else None,
        author=parsed.author, description=parsed.description,
        tags=tuple(f"{t.namespace}.{t.name}" for t in parsed.tags),
        references=tuple(parsed.references or ()))
    try:
        if parsed.errors:
            raise Unsupported(_one_line(str(parsed.errors[0])))
        nodes = [node_of(cond.parse()) for cond in parsed.detection.parsed_condition]
        root = nodes[0] if len(nodes) == 1 else Node("or", nodes)  # a list of conditions: or
        rule.fields = frozenset(root.fields())
        rule.field_list = tuple(sorted(rule.fields))
        rule.match = root.compile()
        rule.needs = root.needs()
    except Unsupported as e:
        rule.why_not = str(e)
    except Exception as e:  # noqa: BLE001 - pySigma's condition errors, and what it lets through
        rule.why_not = _one_line(f"{type(e).__name__}: {e}")
    return rule
