"""Forward-secure sealing of the hash chain: the keys, the seals and the sealing state
(docs/sealing.md has the construction and the threat model; docs/design.md, "Forward-secure
sealing").

Keys form a one-way chain from a random 32-byte seed K0 that ``seal setup`` prints once, as
the verification key, and keeps nowhere else:

    K(n+1) = SHA-256("auditd-lite seal evolve 1\\0" || K(n))

Epoch n ends with seal n, an HMAC-SHA256 with K(n) over the seal's fields (``FIELDS``, in
chain.serialize's encoding) after which the writer keeps only K(n+1): the state file is
rewritten with it before seal n reaches any database, so no crash leaves K(n) on disk beside
a seal it made (``State.advance``). Whoever takes the machine during epoch m holds K(m) and
can compute no earlier key: seals 0..m-1 cannot be forged, and none can be removed without
leaving a hole in their numbers.

HMAC-SHA256 and SHA-256 are the standard library's ``hmac`` and ``hashlib`` (OpenSSL's, in
Debian's Python), already loaded by the chain: the ``cryptography`` package's same two functions
cost the daemon 4.3 MiB of peak RSS in the exec storm (docs/design.md, "Facts measured
2026-12-02, issue #15"). The analysis side uses this (verify): standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .chain import serialize
from .dbfiles import SEAL_STATE_NAME as STATE_NAME
from .durable import write_whole
from .errors import BadInput

STATE_FORMAT = "auditd-lite seal state 1"
DIR_MODE, FILE_MODE = 0o700, 0o600  # the state's directory and file: root's alone
KEY_PREFIX = "auditd-lite-seal:1:"
DEFAULT_INTERVAL_S = 15 * 60
MIN_INTERVAL_S = 1
# the reasons a seal is made: the end of an epoch, a rotation, a clean stop, a daemon's start
REASONS = ("epoch", "rotate", "stop", "start")
# what a seal's MAC covers, in order; a seal row has these and its mac
FIELDS = ("epoch", "key_id", "reason", "sealed_ns", "batch_id", "batch_hash", "interval_s")
RECENT = 16  # seals the state keeps, to put back a seal a crash kept out of the database
_EVOLVE = b"auditd-lite seal evolve 1\0"
_MAC = b"auditd-lite seal 1\0"
_KEY_ID = b"auditd-lite seal key id 1\0"
_KEY_BYTES = 32


def evolve(key: bytes) -> bytes:
    """The next epoch's key: one way, so the current key tells nothing of an earlier one."""
    return hashlib.sha256(_EVOLVE + bytes(key)).digest()


def key_id(seed: bytes) -> str:
    """A name for a sealing key chain that gives nothing of its seed: stored in every seal, so
    that a seal made under another setup is named as such."""
    return hashlib.sha256(_KEY_ID + seed).hexdigest()[:16]


def mac(key: bytes, seal: dict) -> str:
    return hmac.new(bytes(key), _MAC + serialize(tuple(seal[f] for f in FIELDS)), hashlib.sha256).hexdigest()


def mac_matches(key: bytes, seal: dict) -> bool:
    """Whether the seal's mac is its fields' under ``key`` (compared in constant time)."""
    given = seal.get("mac")
    return isinstance(given, str) and hmac.compare_digest(mac(key, seal), given.lower())


@dataclass(frozen=True)
class VerifyKey:
    """What the operator keeps off the machine: the seed, and when and how sealing was set up
    (so that a directory without any seal can be told from one not yet sealed)."""

    seed: bytes
    created_s: int
    interval_s: int

    @property
    def id(self) -> str:
        return key_id(self.seed)

    def text(self) -> str:
        return f"{KEY_PREFIX}{self.seed.hex()}:{self.created_s}:{self.interval_s}"

    @classmethod
    def parse(cls, text: str) -> "VerifyKey":
        """The key as ``seal setup`` printed it, or a file holding it (whitespace is ignored,
        for a key pasted across lines)."""
        raw = "".join(text.split())
        if not raw.startswith(KEY_PREFIX):
            path = Path(text)
            try:
                if path.is_file():
                    return cls.parse(path.read_text())
            except (OSError, UnicodeDecodeError) as e:
                raise BadInput(f"cannot read the verification key file {text}: {e}") from None
            raise BadInput(f"not a verification key: it begins {KEY_PREFIX!r}, as `auditd-lite seal "
                           "setup` printed it (or give the file that holds it)")
        parts = raw[len(KEY_PREFIX):].split(":")
        try:
            seed, created, interval = bytes.fromhex(parts[0]), int(parts[1]), int(parts[2])
            if len(parts) != 3 or len(seed) != _KEY_BYTES or interval < MIN_INTERVAL_S:
                raise ValueError
        except (ValueError, IndexError):
            raise BadInput("the verification key is damaged: it should be "
                           f"{KEY_PREFIX}<64 hex digits>:<seconds>:<seconds>") from None
        return cls(seed, created, interval)

    def keys(self):
        """K(0), K(1), ... (for seals in epoch order)."""
        k = self.seed
        while True:
            yield k
            k = evolve(k)


class SealError(Exception):
    """The sealing state cannot be read or written: the daemon goes on capturing and says so."""


@dataclass
class State:
    """The sealing state on disk: the current epoch's number and key, and the last seals made
    (not secret: they are in the databases too)."""

    key_id: str
    epoch: int
    key: bytearray
    interval_s: int
    created_ns: int
    recent: list

    # -- files ---------------------------------------------------------------

    @staticmethod
    def path(state_dir: Path) -> Path:
        return Path(state_dir) / STATE_NAME

    @classmethod
    def exists(cls, state_dir: Path) -> bool:
        return cls.path(state_dir).exists()

    @classmethod
    def loose_modes(cls, state_dir: Path) -> list[tuple[Path, int, int]]:
        """(path, its mode, the mode it must have) of the state's directory and file where the
        two differ: whoever else can read them has the current key."""
        out = []
        for path, want in ((Path(state_dir), DIR_MODE), (cls.path(state_dir), FILE_MODE)):
            have = path.stat().st_mode & 0o777
            if have != want:
                out.append((path, have, want))
        return out

    @classmethod
    def load(cls, state_dir: Path) -> "State":
        path = cls.path(state_dir)
        try:
            data = json.loads(path.read_text())
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r} is not {STATE_FORMAT!r}")
            key = bytearray.fromhex(data["key"])
            if len(key) != _KEY_BYTES:
                raise ValueError("the key is not 32 bytes")
            if not re.fullmatch(r"[0-9a-f]{16}", str(data["key_id"])):
                raise ValueError("the key id is not 16 hex digits")
            return cls(str(data["key_id"]), int(data["epoch"]), key, int(data["interval_s"]),
                       int(data["created_ns"]), list(data.get("recent", [])))
        except FileNotFoundError:
            raise SealError(f"no sealing state at {path}: `auditd-lite seal setup` makes one") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SealError(f"sealing state {path} unreadable: {e}") from None

    def _json(self) -> bytes:
        return json.dumps({"format": STATE_FORMAT, "key_id": self.key_id, "epoch": self.epoch,
                           "key": self.key.hex(), "interval_s": self.interval_s,
                           "created_ns": self.created_ns, "recent": self.recent},
                          sort_keys=True).encode()

    def save(self, state_dir: Path) -> None:
        """Replace the state file atomically (durable.write_whole, 0600), then overwrite the old
        file's bytes in place: on a filesystem that writes in place, the old key does not stay
        in free blocks either. OSError if it cannot be."""
        path = self.path(Path(state_dir))
        try:
            old = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            old = None
        try:
            write_whole(path, self._json(), FILE_MODE)
            if old is not None:
                size = os.fstat(old).st_size
                os.pwrite(old, b"\0" * size, 0)
                os.fsync(old)
        finally:
            if old is not None:
                os.close(old)

    # -- sealing -------------------------------------------------------------

    def advance(self, state_dir: Path, reason: str, batch_id: int, batch_hash: str) -> dict:
        """Seal the current epoch and move to the next: the seal (its FIELDS and mac), made with
        this epoch's key, which is then gone from memory and disk. The state file holds the next
        key (and the seal, among ``recent``) before the seal is returned to go anywhere else:
        a crash at any point leaves either no seal and this epoch's key, or the seal and only
        the next key. OSError (the state could not be written): nothing changed."""
        seal = {"epoch": self.epoch, "key_id": self.key_id, "reason": reason,
                "sealed_ns": time.time_ns(), "batch_id": batch_id, "batch_hash": batch_hash,
                "interval_s": self.interval_s}
        seal["mac"] = mac(self.key, seal)
        old = self.key
        after = State(self.key_id, self.epoch + 1, bytearray(evolve(bytes(old))), self.interval_s,
                      self.created_ns, (self.recent + [seal])[-RECENT:])
        after.save(state_dir)
        self.epoch, self.key, self.recent = after.epoch, after.key, after.recent
        old[:] = bytes(len(old))  # the one copy this module kept (docs/sealing.md: memory)
        return seal


def setup(state_dir: Path, interval_s: int, force: bool = False) -> VerifyKey:
    """A new key chain: its state in ``state_dir`` (made 0700), its verification key returned,
    to be printed once and kept nowhere on this machine."""
    state_dir = Path(state_dir)
    if State.exists(state_dir) and not force:
        raise BadInput(f"sealing is already set up in {state_dir}: --force makes a new key "
                       "(seals made with the old one stay checkable with the old key)")
    if interval_s < MIN_INTERVAL_S:
        raise BadInput(f"the epoch must be at least {MIN_INTERVAL_S} s")
    try:
        state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(state_dir, DIR_MODE)
        seed = secrets.token_bytes(_KEY_BYTES)
        created_ns = time.time_ns()
        State(key_id(seed), 0, bytearray(seed), interval_s, created_ns, []).save(state_dir)
    except OSError as e:
        raise BadInput(f"cannot write the sealing state in {state_dir}: {e.strerror or e}") from None
    return VerifyKey(seed, created_ns // 10**9, interval_s)


__all__ = ["State", "VerifyKey", "SealError", "setup", "evolve", "key_id", "mac", "mac_matches",
           "DEFAULT_INTERVAL_S", "REASONS", "FIELDS"]
