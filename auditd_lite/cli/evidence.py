"""The commands for evidence that leaves the machine: export, verify and keygen."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import BadInput
from ..investigate.output import SCHEMA_FORMATS
from .common import EVENTS, PROG, add_window, any_int, nonneg_int, plural
from .search import filters_from_args


def add_evidence_commands(sub) -> None:
    e = sub.add_parser(
        "export", help="a sealed, self-contained copy of selected records",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the selected records, with the runs and batch hashes that cover them "
                    "and a manifest, to OUT (SQLite), and OUT.sha256. Reads a consistent snapshot "
                    "while the daemon writes. Never replaces OUT without --force. Exit 1 when "
                    "nothing matches. --format ocsf or ecs writes the same records instead as JSON "
                    "lines, one OCSF 1.8.0 Process Activity event or ECS document each, newest "
                    "first as query prints them (with only --since/--until, also the processes "
                    "seen running when each run started), and OUT.sha256 (no manifest, no chain: "
                    "verify the databases they came from).",
        epilog="examples:\n  auditd-lite export --since 2026-11-20 --until 2026-11-21 -o case-118.db\n"
               "  auditd-lite export --since 2h --comm sh -o sh.db && auditd-lite verify sh.db\n"
               "  auditd-lite export --since 1d --format ocsf -o day.ocsf.jsonl\n"
               "  auditd-lite export --since 7d --format parquet -o /srv/lake\n"
               "  auditd-lite export --since 1d -o case-118.db --sign /root/keys/signing.key")
    e.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    e.add_argument("--db-dir", type=Path, metavar="DIR",
                   help="the database directory (default /var/lib/auditd-lite)")
    add_window(e)
    e.add_argument("--comm", metavar="NAME")
    e.add_argument("--exit-code", type=any_int, metavar="N")
    e.add_argument("--signal", type=nonneg_int, metavar="N")
    e.add_argument("--pid", type=nonneg_int, metavar="N")
    e.add_argument("--ppid", type=nonneg_int, metavar="N")
    e.add_argument("--uid", type=nonneg_int, metavar="N")
    e.add_argument("--filename", metavar="GLOB")
    e.add_argument("--arg", metavar="SUBSTRING")
    e.add_argument("--min-duration-ms", type=nonneg_int, metavar="N")
    e.add_argument("--event", choices=EVENTS)
    e.add_argument("--format", choices=("sqlite",) + SCHEMA_FORMATS + ("parquet",), default="sqlite",
                   help="sqlite (default: the sealed database), or ocsf or ecs (JSON lines); "
                        "parquet: a Parquet lake in the directory OUT, "
                        "host=H/day=YYYY-MM-DD/part-*.parquet (needs pyarrow: "
                        "the package auditd-lite-lake)")
    e.add_argument("--force", action="store_true",
                   help="replace OUT (and OUT.sha256, OUT.sig) if they exist")
    e.add_argument("--sign", type=Path, metavar="KEYFILE",
                   help="also write OUT.sig, a signature with the Ed25519 private key KEYFILE "
                        "(auditd-lite keygen) over the file's name, SHA-256 and manifest "
                        "(sqlite, ocsf and ecs; not parquet)")

    v = sub.add_parser(
        "verify", help="check the hash chain and its seals, or an export and its signature",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Recompute every batch hash and follow the chain across files (oldest "
                    "first); with --verify-key, also check the seals and say per file up to when "
                    "its records are sealed; for an export, check its manifest, its .sha256 and "
                    "its batches (and with --pubkey its signature). Exit 0 when intact, 1 with "
                    "one line per problem.",
        epilog="examples:\n  auditd-lite verify\n  auditd-lite verify --db-dir /srv/audit\n"
               "  auditd-lite verify --verify-key \"$(cat seal-key.txt)\"\n"
               "  auditd-lite verify case-118.db\n"
               "  auditd-lite verify --pubkey signing.pub case-118.db day.ocsf.jsonl")
    v.add_argument("files", nargs="*", type=Path, metavar="FILE")
    v.add_argument("--db-dir", type=Path, metavar="DIR",
                   help="every file of DIR (default /var/lib/auditd-lite when no FILE is given)")
    v.add_argument("--verify-key", metavar="KEY", action="append", default=[],
                   help="also check the seals with the key `auditd-lite seal setup` printed (or a "
                        "file holding it), and say per file up to when its records are sealed; "
                        "again for each key a `seal setup --force` replaced")
    v.add_argument("--pubkey", type=Path, metavar="FILE",
                   help="also check each export's signature (EXPORT.sig, from export --sign) "
                        "with the Ed25519 public key FILE; an export without one fails. JSON-lines "
                        "exports (ocsf, ecs) are checked by their signature")

    from ..signing import DEFAULT_PRIVATE

    k = sub.add_parser(
        "keygen", help="make a key pair for signing exports",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make an Ed25519 key pair: the private key (PEM PKCS8, mode 0600) for "
                    "export --sign, and the public key beside it as NAME.pub (PEM, 0644) for "
                    "verify --pubkey. Prints the paths and the public key's fingerprint (SHA-256 "
                    "of its raw bytes), never the private key. Never replaces a key without "
                    "--force. Keep the private key off the audited machine if you can: whoever "
                    "reads it can sign anything.",
        epilog="examples (as root):\n  auditd-lite keygen\n"
               "  auditd-lite keygen -o /root/keys/case-118.key")
    k.add_argument("-o", "--output", type=Path, metavar="PRIVATE",
                   help=f"the private key's file (default {DEFAULT_PRIVATE}); the public key "
                        "goes beside it, its suffix .pub")
    k.add_argument("--force", action="store_true", help="replace an existing key pair")


def exported(c: dict) -> str:
    """The first words of every export's summary line: how many records of each type."""
    seen = f", {c['seen']} seen at start" if c.get("seen") else ""
    return (f"exported {c['total']} records ({c['exec']} exec, {c['exec_failed']} exec_failed, "
            f"{c['exit']} exit{seen})")


def cmd_export(args) -> int:
    from ..investigate import export, gaps
    from ..config import DEFAULT_DB_DIR

    filters = filters_from_args(args)
    key = None
    if args.sign is not None:
        if args.format == "parquet":
            raise BadInput("--sign signs a sqlite, ocsf or ecs export, not a Parquet lake")
        from .. import signing

        key = signing.load_private(args.sign)  # before any work: a bad key leaves nothing behind
    if args.format in SCHEMA_FORMATS:
        from ..investigate import export_lines

        m = export_lines.export(args.db_dir or DEFAULT_DB_DIR, args.output, filters, args.format,
                                force=args.force, note=lambda text: print(f"{PROG}: note: {text}",
                                                                          file=sys.stderr))
        gaps.warn(m["_gaps"], sys.stderr)
        print(f"{exported(m['counts'])} as {args.format} lines from {plural(m['files'], 'file')} "
              f"to {args.output}; sha256 {m['sha256']} (in {args.output}.sha256)")
        if key is not None:
            signed(*export.sign(args.output, args.format, key, args.force, {"counts": m["counts"]}))
        return 0
    options = [f"{k}={v}" for k, v in sorted(vars(args).items()) if v not in (None, False)]
    if args.format == "parquet":
        return export_parquet(args, filters, options)
    m = export.export(args.db_dir or DEFAULT_DB_DIR, args.output, filters, force=args.force,
                      argv=options, progress_stream=sys.stderr,
                      note=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))
    gaps.warn(m["_gaps"], sys.stderr)
    print(f"{exported(m['counts'])} in {m['tables']['batches']} batches from "
          f"{plural(len(m['sources']), 'file')} to {args.output}; sha256 {m['sha256']} "
          f"(in {args.output}.sha256)")
    if key is not None:
        signed(*export.sign(args.output, "sqlite", key, args.force))
    return 0


def signed(path: Path, fp: str) -> None:
    print(f"signed with key {fp} (in {path})")


def export_parquet(args, filters, options) -> int:
    from ..investigate import gaps, lake
    from ..config import DEFAULT_DB_DIR

    m = lake.export_lake(args.db_dir or DEFAULT_DB_DIR, args.output, filters, force=args.force,
                         argv=options, progress_stream=sys.stderr,
                         note=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))
    gaps.warn(m["_gaps"], sys.stderr)
    print(f"{exported(m['counts'])} to {args.output} as {plural(len(m['files']), 'Parquet file')} "
          f"in {plural(len(m['partitions']), 'host/day partition')}")
    return 0


def cmd_verify(args) -> int:
    from ..investigate import verify

    if args.files and args.db_dir is not None:
        raise BadInput("give database files or --db-dir, not both")
    keys = []
    if args.verify_key:
        from ..seal import VerifyKey

        keys = [VerifyKey.parse(text) for text in args.verify_key]
    pubkey = None
    if args.pubkey is not None:
        if not args.files:
            raise BadInput("--pubkey checks exports: give the export files")
        from .. import signing

        pubkey = signing.load_public(args.pubkey)
    if args.files:
        report = verify.verify(list(args.files), verify_keys=keys, pubkey=pubkey)
    else:
        from ..config import DEFAULT_DB_DIR

        report = verify.verify(db_dir=args.db_dir or DEFAULT_DB_DIR, verify_keys=keys)
    return verify.render(report, sys.stdout, sys.stderr)


def cmd_keygen(args) -> int:
    from .. import signing

    private, public, fp = signing.generate(args.output or signing.DEFAULT_PRIVATE, force=args.force)
    print(f"private key: {private} (mode 0600: keep it secret, off this machine if you can)")
    print(f"public key:  {public} (give it to verify --pubkey)")
    print(f"fingerprint: {fp} (SHA-256 of the raw public key)")
    return 0
