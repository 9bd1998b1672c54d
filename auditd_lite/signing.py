"""Signed exports: an Ed25519 key pair, and a detached signature over a statement about one
export (docs/design.md, "Signed exports").

The sidecar ``.sha256`` and the manifest only show that an export was not changed by someone
who did not also rewrite them; anyone with the file can rewrite all three. A signature made
with a private key kept elsewhere cannot be remade by whoever rewrites the export.

``OUT.sig`` is JSON: ``statement`` (a JSON object) and ``signature`` (base64 of the Ed25519
signature over the statement's canonical bytes: sorted keys, compact separators, ASCII).
Every crypto call of the package is here; cryptography is imported only when a key is used,
so verify without ``--pubkey`` never loads it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from pathlib import Path

from . import __version__
from .durable import write_whole
from .errors import BadInput
from .timeparse import format_time

SIG_SUFFIX = ".sig"
STATEMENT_FORMAT = "auditd-lite signature 1"
DEFAULT_PRIVATE = Path("/etc/auditd-lite/signing.key")
PUBLIC_SUFFIX = ".pub"
KEY_MAX_BYTES = 64 * 1024  # a PEM Ed25519 key is about 120 bytes: anything this large is not one
SIG_MAX_BYTES = 64 * 1024 * 1024  # a statement holds a manifest: far less, even for many sources


def signature_path(export) -> Path:
    return Path(str(export) + SIG_SUFFIX)


def public_path(private: Path) -> Path:
    return private.with_suffix(PUBLIC_SUFFIX)


def fingerprint(public_key) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what the statement and every message name."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


# --- files -------------------------------------------------------------------------

def write_file(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """``durable.write_whole``, its refusals as one line (BadInput): without ``replace`` an
    existing ``path`` is never touched."""
    try:
        write_whole(path, data, mode, replace)
    except FileExistsError:
        raise BadInput(f"{path} exists: use --force to replace it") from None
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None


def _read_small(path: Path, what: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise BadInput(f"no such {what}: {path}") from None
    except IsADirectoryError:
        raise BadInput(f"{what} {path} is a directory") from None
    except PermissionError:
        raise BadInput(f"cannot read {what} {path}: permission denied") from None
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BadInput(f"{what} {path} is too large to be one")
    return data


# --- keys --------------------------------------------------------------------------

def generate(private: Path, force: bool = False) -> tuple[Path, Path, str]:
    """A new key pair: ``private`` (PEM PKCS8, 0600) and its public key beside it (PEM
    SubjectPublicKeyInfo, 0644); (private path, public path, fingerprint). BadInput, nothing
    written, if either exists without ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = public_path(private)
    if public == private:
        raise BadInput(f"the private key's name must not end in {PUBLIC_SUFFIX}: {private}")
    for path in (private, public):
        if path.is_dir():
            raise BadInput(f"{path} is a directory: give the private key's file name with -o")
        if (path.exists() or path.is_symlink()) and not force:
            raise BadInput(f"{path} exists: use --force to replace the key pair")
    parent = private.parent if str(private.parent) else Path(".")
    if not parent.exists():
        try:
            os.makedirs(parent)
            os.chmod(parent, 0o700)  # makedirs' mode is masked by the umask
        except OSError as exc:
            raise BadInput(f"cannot make {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write in {parent} (run as root, or give another place with -o)")
    key = ed25519.Ed25519PrivateKey.generate()
    write_file(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()), 0o600, force)
    try:
        write_file(public, key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644, force)
    except BadInput:
        if not force:
            os.unlink(private)  # the private key just made: without its public key it is no pair
        raise
    return private, public, fingerprint(key.public_key())


def load_private(path: Path):
    """The Ed25519 private key in ``path`` (PEM PKCS8); BadInput naming what else it is."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    data = _read_small(path, "signing key", KEY_MAX_BYTES)
    if b"PUBLIC KEY-----" in data:
        raise BadInput(f"{path} is a public key: --sign takes the private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BadInput(f"{path} is encrypted with a passphrase: give an unencrypted key "
                       "(auditd-lite keygen)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise BadInput(f"{path} is not a PEM private key (auditd-lite keygen makes one)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BadInput(f"{path} is not an Ed25519 key (auditd-lite keygen makes one)")
    return key


def load_public(path: Path):
    """The Ed25519 public key in ``path`` (PEM SubjectPublicKeyInfo); BadInput naming what else it is."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    data = _read_small(path, "public key", KEY_MAX_BYTES)
    if b"PRIVATE KEY-----" in data:
        # the private key does verify, but whoever holds it where exports are checked can sign
        raise BadInput(f"{path} is a private key: --pubkey takes the public key "
                       f"(the {PUBLIC_SUFFIX} file keygen wrote beside it)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise BadInput(f"{path} is not a PEM public key (auditd-lite keygen makes one)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BadInput(f"{path} is not an Ed25519 public key (auditd-lite keygen makes one)")
    return key


# --- statements ----------------------------------------------------------------------

def canonical(statement: dict) -> bytes:
    """The bytes signed: one spelling of the statement, which the verifier recomputes."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(export: Path, kind: str, sha256: str, key, facts: dict, force: bool) -> tuple[Path, str]:
    """Write ``export``'s signature (a statement of its name, size, digest, ``kind`` and
    ``facts``, signed with ``key``); (the .sig path, the key's fingerprint)."""
    fp = fingerprint(key.public_key())
    statement = {"format": STATEMENT_FORMAT, "file": export.name, "size": export.stat().st_size,
                 "sha256": sha256, "export_format": kind, "signed_at": format_time(time.time_ns()),
                 "key": fp, "tool_version": __version__, **facts}
    doc = {"statement": statement,
           "signature": base64.b64encode(key.sign(canonical(statement))).decode()}
    path = signature_path(export)
    write_file(path, (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode(), 0o444, force)
    return path, fp


class Unsigned(Exception):
    """The signature cannot vouch for the export; the message says why (one verify problem)."""


def check(export: Path, public_key) -> dict:
    """The statement of ``export``'s signature, once its signature is good under ``public_key``;
    Unsigned saying why not. What the statement says is the caller's to compare."""
    path = signature_path(export)
    try:
        with open(path, "rb") as f:
            raw = f.read(SIG_MAX_BYTES + 1)
    except FileNotFoundError:
        raise Unsigned(f"not signed: no {path.name} beside it") from None
    except OSError as exc:
        raise Unsigned(f"cannot read {path.name}: {exc.strerror or exc}") from None
    try:
        if len(raw) > SIG_MAX_BYTES:
            raise ValueError("too large")
        doc = json.loads(raw)
        statement, signature = doc["statement"], base64.b64decode(doc["signature"], validate=True)
        if not isinstance(statement, dict):
            raise ValueError("its statement is not an object")
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise Unsigned(f"{path.name} is not an auditd-lite signature ({exc})") from None
    if statement.get("format") != STATEMENT_FORMAT:
        raise Unsigned(f"{path.name} is not in the format {STATEMENT_FORMAT!r}")
    from cryptography.exceptions import InvalidSignature

    given, named = fingerprint(public_key), statement.get("key")
    try:
        public_key.verify(signature, canonical(statement))
    except InvalidSignature:
        if named != given:
            raise Unsigned(f"{path.name} is signed by key {named}, not by the given key {given}") from None
        raise Unsigned(f"{path.name}: the signature does not match its statement: the statement "
                       "was changed") from None
    if named != given:
        raise Unsigned(f"{path.name} names key {named} but is signed by {given}")
    return statement


__all__ = ["SIG_SUFFIX", "STATEMENT_FORMAT", "DEFAULT_PRIVATE", "signature_path", "public_path",
           "fingerprint", "generate", "load_private", "load_public", "sign", "check", "Unsigned"]
