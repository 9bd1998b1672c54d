#!/usr/bin/env python3
"""Make tests/data/ocsf/: the published OCSF schema of the version auditd_lite/formats/ocsf.py
writes, as the JSON Schema of each class we write (its objects embedded) that the tests
validate every event against: process_activity (query, export, the live stream) and
detection_finding (hunt's findings, formats/finding.py).

    .venv/bin/python scripts/ocsf_schema.py [--git-dir DIR] [--out DIR]

The schema is the one schema.ocsf.io publishes for the release (its ``export/v2/schema``, which
the ocsf-json-schema package ships byte for byte, with the generator that turns it into JSON
Schema, draft 2020-12). It is checked, attribute by attribute, against the release tag of the
ocsf/ocsf-schema repository compiled by the OCSF project's own ocsf-lib: every class and object
the events can reach must have the same attributes, types, object types, requirements, arrays and
enum values in both, or nothing is written. (ocsf-lib and the server disagree on which profile an
attribute shared by two profiles, or re-declared with ``"profile": null``, belongs to; profile
membership is therefore taken from the published schema and not compared.)

Needs ``pip install -e '.[schema]'``; never run by the tests, which read only what it wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
from auditd_lite.formats import ocsf  # noqa: E402  the version and profiles the events declare

DEFAULT_GIT_DIR = Path("/work/.mirror/ocsf+ocsf-schema/repo")
CLASSES = ("process_activity", "detection_finding")


def compile_tag(git_dir: Path, tag: str) -> tuple[dict, str]:
    """The tag's schema compiled by ocsf-lib, and the tag's commit."""
    from ocsf.compile.compiler import Compilation
    from ocsf.compile.options import CompilationOptions
    from ocsf.repository import read_repo
    from ocsf.schema import to_dict

    commit = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", f"{tag}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", commit],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        version = json.loads(Path(tmp, "version.json").read_text())["version"]
        if version != tag.lstrip("v"):
            raise SystemExit(f"tag {tag} says version {version}")
        options = CompilationOptions(set_object_types=True)
        compiled = to_dict(Compilation(read_repo(tmp, preserve_raw_data=False), options).build())
    return compiled, commit


def _reachable(published: dict) -> list[tuple[str, str]]:
    """The classes and every object their attributes reach, as (kind, name)."""
    out, todo, seen = [], [("classes", c) for c in CLASSES], set()
    while todo:
        kind, name = todo.pop()
        if (kind, name) in seen:
            continue
        seen.add((kind, name))
        out.append((kind, name))
        for attr in published[kind][name]["attributes"].values():
            if attr.get("object_type"):
                todo.append(("objects", attr["object_type"]))
    return sorted(out)


def _shape(attr: dict) -> tuple:
    object_type = attr.get("object_type")
    if object_type is None and not attr["type"].endswith("_t"):
        object_type = attr["type"]  # ocsf-lib names the object as the type
    return ("object_t" if object_type else attr["type"], object_type, attr.get("requirement"),
            bool(attr.get("is_array")), tuple(sorted(str(k) for k in (attr.get("enum") or {}))))


def compare(published: dict, compiled: dict) -> list[str]:
    """What the published schema and the compiled tag disagree on, for what the classes reach."""
    problems = []
    for kind, name in _reachable(published):
        mine = compiled[kind].get(name)
        if mine is None:
            problems.append(f"{kind} {name}: not in the tag")
            continue
        theirs, ours = published[kind][name]["attributes"], mine["attributes"]
        for attr in sorted(set(theirs) | set(ours)):
            if attr not in theirs or attr not in ours:
                problems.append(f"{kind} {name}.{attr}: only in the {'tag' if attr in ours else 'published'}")
            elif _shape(theirs[attr]) != _shape(ours[attr]):
                problems.append(f"{kind} {name}.{attr}: {_shape(theirs[attr])} != {_shape(ours[attr])}")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--git-dir", type=Path, default=DEFAULT_GIT_DIR,
                   help="a clone of github.com/ocsf/ocsf-schema (bare is fine)")
    p.add_argument("--out", type=Path, default=HERE / "tests" / "data" / "ocsf")
    args = p.parse_args()

    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

    version = ocsf.OCSF_VERSION
    published = get_ocsf_schema(version=version)
    if published.get("version") != version:
        raise SystemExit(f"the published schema is {published.get('version')}, not {version}")
    compiled, commit = compile_tag(args.git_dir, version)
    problems = compare(published, compiled)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(f"the published {version} and the tag disagree in {len(problems)} places")
    args.out.mkdir(parents=True, exist_ok=True)
    classes = {}
    for name in CLASSES:
        schema = OcsfJsonSchemaEmbedded(published).get_class_schema(name, profiles=list(ocsf.PROFILES))
        text = json.dumps(schema, indent=1, sort_keys=True) + "\n"
        target = args.out / f"{name}-{version}.schema.json"
        target.write_text(text)
        classes[name] = {"class_uid": published["classes"][name]["uid"], "schema_file": target.name,
                         "schema_sha256": hashlib.sha256(text.encode()).hexdigest()}
        print(f"wrote {target} ({len(text)} bytes)")
    published_bytes = json.dumps(published, sort_keys=True).encode()
    source = {
        "ocsf_version": version, "classes": classes, "profiles": sorted(ocsf.PROFILES),
        "published": f"https://schema.ocsf.io/{version}/export/v2/schema, as shipped in "
                     f"ocsf-json-schema {metadata.version('ocsf-json-schema')}",
        "published_sha256_sorted_json": hashlib.sha256(published_bytes).hexdigest(),
        "checked_against": {"repository": "https://github.com/ocsf/ocsf-schema", "tag": version,
                            "commit": commit, "compiler": f"ocsf-lib {metadata.version('ocsf-lib')}",
                            "classes_and_objects_compared": len(_reachable(published))},
        "generator": f"ocsf-json-schema {metadata.version('ocsf-json-schema')} "
                     "OcsfJsonSchemaEmbedded.get_class_schema",
        "made_by": "scripts/ocsf_schema.py",
    }
    (args.out / "SOURCE.json").write_text(json.dumps(source, indent=1, sort_keys=True) + "\n")
    print(f"and SOURCE.json: {len(_reachable(published))} classes and objects agree with tag "
          f"{version} ({commit[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
