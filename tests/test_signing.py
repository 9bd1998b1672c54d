"""Signed exports: `keygen`, `export --sign` and `verify --pubkey`, through the command line.

The databases are written by the real BatchWriter (test_export_verify.write), the exports and
keys by the real CLI, and every tampering is done to real files as an attacker holding the
export, its sidecar and this tool's source would do it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from auditd_lite import chain
from auditd_lite.investigate.export import content_sha256, table_sha256

from conftest import REPO, cli_in_process, run_cli
from test_export_verify import manifest, t, write


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """600 records in 6 rotated files over two runs (test_export_verify.write)."""
    return write(tmp_path_factory.mktemp("sign") / "db")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """A key pair made by `auditd-lite keygen`: DIR/signing.key and DIR/signing.pub."""
    d = tmp_path_factory.mktemp("keys") / "k"
    status, out, err = cli_in_process("keygen", "-o", d / "signing.key")
    assert status == 0, err
    return d


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("other") / "k"
    assert cli_in_process("keygen", "-o", d / "signing.key")[0] == 0
    return d


def fp(pub: Path) -> str:
    """The fingerprint keygen prints: SHA-256 of the raw public key."""
    key = serialization.load_pem_public_key(pub.read_bytes())
    return hashlib.sha256(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def signed_export(db: Path, keys: Path, out: Path, *flags) -> Path:
    status, text, err = cli_in_process("export", "--db-dir", db, "-o", out, "--sign", keys / "signing.key", *flags)
    assert status == 0, err
    return out


def verify(pub: Path, *files) -> tuple[int, str, str]:
    return cli_in_process("verify", "--pubkey", pub, *files)


def sidecars(path: Path) -> list[Path]:
    return [Path(str(path) + s) for s in (".sha256", ".sig")]


def copy_export(src: Path, dst_dir: Path) -> Path:
    """The export, its sidecar and its signature copied under the same name, writable."""
    dst_dir.mkdir(exist_ok=True)
    for p in (src, *sidecars(src)):
        shutil.copy(p, dst_dir / p.name)
        (dst_dir / p.name).chmod(0o644)
    return dst_dir / src.name


def reseal(path: Path) -> None:
    """Write the sidecar again for the file as it is now (anyone can)."""
    Path(str(path) + ".sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")


def not_what_was_signed(path: Path) -> str:
    """verify --pubkey's lines for a SQLite export whose bytes and manifest are not the signed ones."""
    return (f"{path}: SHA-256 differs from the one signed in {path.name}.sig: the file was changed after "
            f"it was signed\n{path}: the manifest differs from the one signed in {path.name}.sig\n")


def one_line_error(status: int, out: str, err: str, *words) -> None:
    assert status == 2 and out == "", (status, out, err)
    assert err.count("\n") == 1 and err.startswith("auditd-lite: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


# --- keygen --------------------------------------------------------------------------

def test_keygen_makes_a_private_key_0600_and_a_public_key_0644(tmp_path):
    """keygen in a directory that does not exist: it is made 0700, the private key is PEM PKCS8
    Ed25519 at 0600, signing.pub beside it PEM SubjectPublicKeyInfo at 0644; the output names
    both and the fingerprint, and never holds the private key."""
    private = tmp_path / "new" / "signing.key"
    status, out, err = cli_in_process("keygen", "-o", private)
    assert (status, err) == (0, "")
    public = tmp_path / "new" / "signing.pub"
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes() == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert str(private) in out and str(public) in out and fp(public) in out
    body = b"".join(private.read_bytes().splitlines()[1:-1]).decode()
    assert body not in out
    assert sorted(p.name for p in private.parent.iterdir()) == ["signing.key", "signing.pub"]


def test_keygen_refuses_to_overwrite_and_force_replaces(tmp_path):
    """A second keygen on the same path exits 2 with one line and leaves both keys as they were;
    with --force it makes a new pair, with the same modes."""
    private = tmp_path / "signing.key"
    assert cli_in_process("keygen", "-o", private)[0] == 0
    public = tmp_path / "signing.pub"
    before = (private.read_bytes(), public.read_bytes())
    one_line_error(*cli_in_process("keygen", "-o", private), f"{private} exists", "--force")
    assert (private.read_bytes(), public.read_bytes()) == before
    public.unlink()  # the public key alone existing, or only the private one, is refused too
    one_line_error(*cli_in_process("keygen", "-o", private), f"{private} exists")
    assert not public.exists() and private.read_bytes() == before[0]
    status, out, err = cli_in_process("keygen", "-o", private, "--force")
    assert (status, err) == (0, "")
    assert private.read_bytes() != before[0]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    assert fp(public) in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.key", "signing.pub"]  # no temporary left


# --- signed exports verify -----------------------------------------------------------

def test_signed_sqlite_export_verifies(db, keys, tmp_path):
    """export --sign writes OUT.sig (read-only) beside OUT and OUT.sha256; verify --pubkey exits 0
    and names the key; its statement holds the file's name, digest and the manifest."""
    out = signed_export(db, keys, tmp_path / "case.db", "--since", t(150), "--until", t(450))
    sig = Path(str(out) + ".sig")
    assert stat.S_IMODE(sig.stat().st_mode) == 0o444
    statement = json.loads(sig.read_text())["statement"]
    assert (statement["format"], statement["file"], statement["export_format"]) == \
        ("auditd-lite signature 1", "case.db", "sqlite")
    assert statement["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert statement["manifest"] == manifest(out) and statement["key"] == fp(keys / "signing.pub")
    status, text, err = verify(keys / "signing.pub", out)
    assert (status, err) == (0, "")
    assert text == (f"ok: 1 file, 4 batches, 300 records; 1 export sealed and intact; "
                    f"1 signed by key {fp(keys / 'signing.pub')}\n")


@pytest.mark.parametrize("fmt", ["ocsf", "ecs"])
def test_signed_json_lines_export_verifies(db, keys, tmp_path, fmt):
    """A signed ocsf or ecs export (JSON lines: no manifest) passes verify --pubkey: exit 0."""
    out = signed_export(db, keys, tmp_path / f"day.{fmt}.jsonl", "--format", fmt)
    statement = json.loads(Path(str(out) + ".sig").read_text())["statement"]
    assert statement["export_format"] == fmt and statement["counts"]["total"] == 600
    status, text, err = verify(keys / "signing.pub", out)
    assert (status, err) == (0, "")
    assert text == f"ok: 1 file, 0 batches, 600 records; 1 export sealed and intact; 1 signed by key {fp(keys / 'signing.pub')}\n"


def test_without_pubkey_a_signed_export_verifies_with_a_note(db, keys, tmp_path):
    """verify without --pubkey on a signed SQLite export works as before (exit 0) and says in a
    note that the signature was not checked."""
    out = signed_export(db, keys, tmp_path / "case.db")
    status, text, err = cli_in_process("verify", out)
    assert (status, text) == (0, "ok: 1 file, 6 batches, 600 records; 1 export sealed and intact\n")
    assert err == f"auditd-lite: note: {out}: signed (case.db.sig), but the signature was not checked: give --pubkey\n"


def test_json_lines_export_without_pubkey_is_one_line(db, keys, tmp_path):
    """verify on a signed JSON-lines export without --pubkey: exit 2, one line saying to give it."""
    out = signed_export(db, keys, tmp_path / "day.jsonl", "--format", "ocsf")
    one_line_error(*cli_in_process("verify", out), str(out), "give --pubkey")


# --- the threat: an export rewritten with its manifest and sidecar -----------------

def test_export_rewritten_with_its_manifest_and_sidecar_fails(db, keys, tmp_path):
    """A record deleted from a signed export with everything else made consistent (its digest put
    in omitted_rows, the manifest's counts, table sizes and content digest recomputed, the
    sidecar rewritten) passes verify without the key, and fails verify --pubkey: exit 1, the
    lines name the file, its digest and its manifest."""
    signed = signed_export(db, keys, tmp_path / "case.db", "--since", t(150), "--until", t(450))
    bad = copy_export(signed, tmp_path / "rewritten")
    conn = sqlite3.connect(bad)
    cols = chain.file_event_columns(conn)
    row = conn.execute(f"SELECT {', '.join(cols)} FROM events WHERE id = 301").fetchone()
    batch_id, stored = conn.execute("SELECT b.id, b.hash FROM batches b JOIN events e ON e.batch_id = b.id "
                                    "WHERE e.id = 301").fetchone()
    conn.execute("DELETE FROM events WHERE id = 301")
    conn.execute("INSERT INTO omitted_rows VALUES (?, ?, ?)",
                 (301, batch_id, chain.row_digest(tuple(row), chain.hash_format(stored))))
    m = manifest(signed)
    m["counts"][row[cols.index("event")]] -= 1
    m["counts"]["total"] -= 1
    m["tables"]["events"] -= 1
    m["tables"]["omitted_rows"] += 1
    m["table_sha256"] = table_sha256(conn)
    m["content_sha256"] = content_sha256(conn)
    for key in ("counts", "tables", "table_sha256", "content_sha256"):
        conn.execute("UPDATE manifest SET value = ? WHERE key = ?", (json.dumps(m[key], sort_keys=True), key))
    conn.commit()
    conn.close()
    reseal(bad)
    assert cli_in_process("verify", bad)[:2] == (0, "ok: 1 file, 4 batches, 299 records; 1 export sealed and intact\n")
    assert verify(keys / "signing.pub", bad)[:2] == (1, not_what_was_signed(bad))


def test_json_lines_export_with_one_line_edited_fails(db, keys, tmp_path):
    """One line of a signed OCSF export edited, the sidecar written again: verify --pubkey exits 1
    naming the file."""
    signed = signed_export(db, keys, tmp_path / "day.jsonl", "--format", "ocsf")
    bad = copy_export(signed, tmp_path / "edited")
    lines = bad.read_text().splitlines(keepends=True)
    edited = lines[3].replace('"cat"', '"innocent"').replace('"sh"', '"innocent"')
    assert edited != lines[3]
    bad.write_text("".join(lines[:3] + [edited] + lines[4:]))
    reseal(bad)
    status, text, err = verify(keys / "signing.pub", bad)
    assert (status, text) == (1, f"{bad}: SHA-256 differs from the one signed in day.jsonl.sig: the file was "
                                 "changed after it was signed\n")


def test_signature_swapped_from_another_export_fails(db, keys, tmp_path):
    """The .sig of another export by the same key put beside this one: verify --pubkey exits 1,
    its digest and manifest differ from the ones signed."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = signed_export(db, keys, tmp_path / "a" / "case.db", "--since", t(150))
    b = signed_export(db, keys, tmp_path / "b" / "case.db", "--until", t(300))
    bad = copy_export(a, tmp_path / "swapped")
    shutil.copy(Path(str(b) + ".sig"), Path(str(bad) + ".sig"))
    assert verify(keys / "signing.pub", bad)[:2] == (1, not_what_was_signed(bad))


def test_statement_rewritten_to_match_fails(db, keys, tmp_path):
    """The statement in the .sig rewritten with the tampered file's digest (the signature kept):
    verify --pubkey exits 1, the signature does not match its statement."""
    signed = signed_export(db, keys, tmp_path / "day.jsonl", "--format", "ecs")
    bad = copy_export(signed, tmp_path / "restated")
    text = bad.read_text()
    assert '"cat"' in text
    bad.write_text(text.replace('"cat"', '"innocent"', 1))
    reseal(bad)
    sig = Path(str(bad) + ".sig")
    doc = json.loads(sig.read_text())
    doc["statement"]["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
    sig.write_text(json.dumps(doc))
    status, text, err = verify(keys / "signing.pub", bad)
    assert (status, text) == (1, f"{bad}: day.jsonl.sig: the signature does not match its statement: the "
                                 "statement was changed\n")


def test_signature_by_another_key_fails(db, keys, other_keys, tmp_path):
    """An export signed with another key: verify --pubkey exits 1 with a line naming both
    fingerprints."""
    out = signed_export(db, other_keys, tmp_path / "case.db")
    status, text, err = verify(keys / "signing.pub", out)
    assert (status, text) == (1, f"{out}: case.db.sig is signed by key {fp(other_keys / 'signing.pub')}, not by "
                                 f"the given key {fp(keys / 'signing.pub')}\n")


@pytest.mark.parametrize("fmt", ["sqlite", "ocsf"])
def test_missing_signature_fails_with_pubkey(db, keys, tmp_path, fmt):
    """An export without its .sig given to verify --pubkey: exit 1, "not signed"."""
    status, _, err = cli_in_process("export", "--db-dir", db, "-o", tmp_path / "x", "--format", fmt)
    assert status == 0, err
    status, text, err = verify(keys / "signing.pub", tmp_path / "x")
    assert (status, text) == (1, f"{tmp_path / 'x'}: not signed: no x.sig beside it\n")


# --- bad keys and bad requests --------------------------------------------------------

def bad_key_files(d: Path, keys: Path) -> dict[str, Path]:
    """Files that are not what --sign or --pubkey takes, by what they are."""
    d.mkdir()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed = ed25519.Ed25519PrivateKey.generate()
    files = {
        "missing": d / "missing.key",
        "directory": d,
        "garbage": d / "garbage.key",
        "empty": d / "empty.key",
        "rsa private": d / "rsa.key",
        "rsa public": d / "rsa.pub",
        "encrypted": d / "encrypted.key",
        "public": keys / "signing.pub",
        "private": keys / "signing.key",
    }
    files["garbage"].write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    files["empty"].write_bytes(b"")
    files["rsa private"].write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    files["rsa public"].write_bytes(rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    files["encrypted"].write_bytes(ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.BestAvailableEncryption(b"pass")))
    return files


SIGN_REFUSALS = {"missing": "no such signing key", "directory": "is a directory", "garbage": "not a PEM private key",
                 "empty": "not a PEM private key", "rsa private": "not an Ed25519 key", "rsa public": "is a public key",
                 "encrypted": "encrypted with a passphrase", "public": "is a public key"}
PUBKEY_REFUSALS = {"missing": "no such public key", "directory": "is a directory", "garbage": "is a private key",
                   "empty": "not a PEM public key", "rsa private": "is a private key",
                   "rsa public": "not an Ed25519 public key", "encrypted": "is a private key",
                   "private": "is a private key"}


@pytest.mark.parametrize("fmt", ["sqlite", "ecs"])
def test_bad_signing_key_is_refused_before_any_export(db, keys, tmp_path, fmt):
    """export --sign with a key file that is missing, a directory, garbage, empty, RSA, encrypted or
    a public key: exit 2 with one line naming the file and the problem, no traceback, and nothing
    written (no OUT, OUT.sha256, OUT.sig, no temporary)."""
    files = bad_key_files(tmp_path / "bad", keys)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for what, words in SIGN_REFUSALS.items():
        status, out, err = cli_in_process("export", "--db-dir", db, "-o", out_dir / "x", "--format", fmt,
                                          "--sign", files[what])
        one_line_error(status, out, err, str(files[what]), words)
        assert list(out_dir.iterdir()) == [], what


def test_bad_pubkey_is_refused(db, keys, tmp_path):
    """verify --pubkey with a file that is missing, a directory, garbage, empty, RSA or a private
    key: exit 2 with one line naming the file and the problem, no traceback; nothing is written."""
    files = bad_key_files(tmp_path / "bad", keys)
    out = signed_export(db, keys, tmp_path / "case.db")
    before = sorted(tmp_path.rglob("*"))
    for what, words in PUBKEY_REFUSALS.items():
        one_line_error(*verify(files[what], out), str(files[what]), words)
    assert sorted(tmp_path.rglob("*")) == before


def test_pubkey_checks_exports_only(db, keys):
    """--pubkey with --db-dir, with no file, or with a file the daemon wrote: exit 2, one line."""
    pub = keys / "signing.pub"
    one_line_error(*cli_in_process("verify", "--pubkey", pub, "--db-dir", db), "--pubkey checks exports")
    one_line_error(*cli_in_process("verify", "--pubkey", pub), "--pubkey checks exports")
    one_line_error(*verify(pub, db / "audit.db"), "--pubkey checks exports", str(db / "audit.db"))


def test_sign_refuses_a_parquet_lake(db, keys, tmp_path):
    """export --format parquet --sign: exit 2, one line, the lake directory not made."""
    one_line_error(*cli_in_process("export", "--db-dir", db, "-o", tmp_path / "lake", "--format", "parquet",
                                   "--sign", keys / "signing.key"), "Parquet")
    assert not (tmp_path / "lake").exists()


def test_existing_signature_needs_force(db, keys, tmp_path):
    """An OUT.sig left beside OUT's place is refused without --force (exit 2, untouched); --sign
    with --force replaces it; an unsigned --force export removes the signature of the file it
    replaced."""
    out = tmp_path / "case.db"
    sig = Path(str(out) + ".sig")
    sig.write_text("left here\n")
    one_line_error(*cli_in_process("export", "--db-dir", db, "-o", out, "--sign", keys / "signing.key"),
                   f"{sig} exists", "--force")
    assert sig.read_text() == "left here\n" and not out.exists()
    signed_export(db, keys, out, "--force")
    assert verify(keys / "signing.pub", out)[0] == 0
    assert cli_in_process("export", "--db-dir", db, "-o", out, "--since", t(300), "--force")[0] == 0
    assert not sig.exists()
    assert verify(keys / "signing.pub", out)[:2] == (1, f"{out}: not signed: no case.db.sig beside it\n")


def test_errors_have_no_traceback_in_a_real_process(db, keys, tmp_path):
    """The entry point as a user runs it: a public key given to --sign, exit 2, one line."""
    p = run_cli("export", "--db-dir", db, "-o", tmp_path / "x.db", "--sign", keys / "signing.pub")
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1 and b"Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []


# --- without root --------------------------------------------------------------------

AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def public_dir():
    """A world-readable directory outside pytest's (which is closed to other users)."""
    d = Path(tempfile.mkdtemp(prefix="auditd-lite-sign-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def as_nobody(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*AS_NOBODY, sys.executable, "-m", "auditd_lite.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env={"PATH": os.environ["PATH"]})


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_verify_pubkey_as_nobody(db, keys, public_dir):
    """verify --pubkey run as nobody on a signed SQLite and a signed OCSF export in a world-readable
    directory: exit 0; a public key nobody cannot read: exit 2, one line."""
    case = signed_export(db, keys, public_dir / "case.db")
    lines = signed_export(db, keys, public_dir / "day.jsonl", "--format", "ocsf")
    pub = public_dir / "signing.pub"
    shutil.copy(keys / "signing.pub", pub)
    pub.chmod(0o644)
    p = as_nobody("verify", "--pubkey", pub, case, lines)
    assert (p.returncode, p.stderr) == (0, ""), p.stdout
    assert p.stdout.startswith("ok: 2 files") and "2 signed by key" in p.stdout
    pub.chmod(0o600)
    p = as_nobody("verify", "--pubkey", pub, case)
    assert p.returncode == 2 and p.stderr == f"auditd-lite: cannot read public key {pub}: permission denied\n"
