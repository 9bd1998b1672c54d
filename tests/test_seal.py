"""Forward-secure sealing (issue #15): the threat model, the key evolution, crashes.

The attacker here is root on the machine after some epochs were sealed: they can rewrite any
file, and they have this tool's source, so they recompute every unkeyed hash after an edit
(``rechain``). Each forgery is first shown to pass the unkeyed chain (``verify`` without a
key): that is the attack the seals are for. The sealed directories are written by the real
batch writer and its sealer, with one-second epochs that really elapse.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from auditd_lite import chain, seal
from auditd_lite.dbfiles import database_files
from auditd_lite.investigate import verify
from auditd_lite.storage.batchwriter import BatchWriter
from auditd_lite.storage.sealer import Sealer
from conftest import Daemon, cli_in_process, log_events, run_cli, second_rows, tmpfs

EPOCH_S = 1


def files_oldest_first(d: Path) -> list[Path]:
    return list(reversed(database_files(db_dir=d)))


def next_epoch() -> None:
    time.sleep(EPOCH_S + 0.05)


def seals_in(d: Path) -> list[tuple]:
    """(epoch, reason, batch_id) of every seal in the directory's files, by epoch."""
    out = []
    for path in files_oldest_first(d):
        con = sqlite3.connect(path)
        try:
            out += con.execute("SELECT epoch, reason, batch_id FROM seals").fetchall()
        finally:
            con.close()
    return sorted(out)


def writer(db: Path, state: Path) -> BatchWriter:
    bw = BatchWriter(db, {"keep": 0}, sealer=Sealer(state))
    bw.open()
    return bw


def build(root: Path) -> tuple[Path, Path, seal.VerifyKey]:
    """The pristine sealed directory: a rotated file with batches 1..5 (the run's start, records
    in 2..5) and the live file with 6..12 (the run's start there, records in 7..11, its stop);
    seals: 0 start (batch 1), 1 epoch (3), 2 rotate (5), 3 epoch (8), 4 stop (12)."""
    state, db = root / "seal", root / "db"
    key = seal.setup(state, EPOCH_S)
    bw = writer(db, state)
    n = 0

    def batch():
        nonlocal n
        bw.write(second_rows(20, n))
        n += 20

    batch(), batch()
    next_epoch()
    bw.maybe_rotate()  # the writer's call between batches: the epoch is over
    batch(), batch()
    bw.rotate()
    batch(), batch()
    next_epoch()
    bw.maybe_rotate()
    batch(), batch(), batch()
    bw.close()
    assert seals_in(db) == [(0, "start", 1), (1, "epoch", 3), (2, "rotate", 5), (3, "epoch", 8),
                            (4, "stop", 12)]
    return db, state, key


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return build(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def sealed(pristine, tmp_path):
    """A copy of the pristine directory and state to tamper with: (db, state, key)."""
    db, state, key = pristine
    shutil.copytree(db, tmp_path / "db")
    shutil.copytree(state, tmp_path / "seal")
    return tmp_path / "db", tmp_path / "seal", key


# --- the attacker's tools -------------------------------------------------------------


def writable(path: Path) -> sqlite3.Connection:
    os.chmod(path, 0o644)  # a rotated file is read-only; root changes that
    return sqlite3.connect(path)


def rechain(db: Path) -> None:
    """Recompute every batch's header and hash from its records, oldest first, each linked to
    the one before, and make every run's counters agree with its batches: what anyone who can
    write the files does after an edit, with nothing but the chain's public definition (format
    5's evidence taken as it stands: whoever edits a run's row or a seen process recomputes it
    too, see test_evidence.py)."""
    prev = chain.GENESIS
    for path in files_oldest_first(db):
        con = writable(path)
        cols = ", ".join(chain.file_event_columns(con))
        for bid, run_id, written_ns, lost_k, lost_u, *evidence in con.execute(
                f"SELECT id, run_id, written_ns, lost_kernel, lost_user, {', '.join(chain.EVIDENCE_COLUMNS)} "
                "FROM batches ORDER BY id").fetchall():
            rows = con.execute(f"SELECT {cols} FROM events WHERE batch_id = ? ORDER BY id", (bid,)).fetchall()
            first, last = (rows[0][0], rows[-1][0]) if rows else (None, None)
            header = (bid, run_id, written_ns, first, last, len(rows), lost_k, lost_u, *evidence)
            h = chain.batch_hash(prev, header, [chain.row_digest(r) for r in rows])
            con.execute("UPDATE batches SET first_event_id = ?, last_event_id = ?, count = ?, "
                        "prev_hash = ?, hash = ? WHERE id = ?", (first, last, len(rows), prev, h, bid))
            prev = h
        con.execute("UPDATE runs SET events_written = (SELECT coalesce(sum(count), 0) FROM batches "
                    "WHERE batches.run_id = runs.id)")
        con.commit()
        con.close()


def drop_batches(path: Path, ids) -> None:
    con = writable(path)
    for bid in ids:
        con.execute("DELETE FROM events WHERE batch_id = ?", (bid,))
        con.execute("DELETE FROM batches WHERE id = ?", (bid,))
    con.commit()
    con.close()


def drop_seals(path: Path, epochs) -> None:
    con = writable(path)
    con.executemany("DELETE FROM seals WHERE epoch = ?", [(e,) for e in epochs])
    con.commit()
    con.close()


def check(db: Path, key=None, **kw) -> tuple[int, str, str]:
    """verify (--db-dir, or the files by name with files=True), as the CLI prints it."""
    import io

    files = kw.pop("files", False)
    keys = [] if key is None else key if isinstance(key, list) else [key]
    report = (verify.verify(files_oldest_first(db), verify_keys=keys, **kw) if files
              else verify.verify(db_dir=db, verify_keys=keys, **kw))
    out, err = io.StringIO(), io.StringIO()
    status = verify.render(report, out, err)
    return status, out.getvalue(), err.getvalue()


def forged(db: Path, key) -> str:
    """The forgery passes the unkeyed chain (it is the attack), and fails with the key: the
    problem lines verify printed."""
    status, out, err = check(db)
    assert status == 0, out + err
    status, out, err = check(db, key)
    assert status == 1, out + err
    return out


# --- the threat model ---------------------------------------------------------------------

def test_pristine_directory_verifies_with_its_key(sealed):
    """Untouched, the directory verifies with the key: every file is sealed to its last batch,
    nothing is left open, and the summary says the seals hold."""
    db, _, key = sealed
    status, out, err = check(db, key)
    assert status == 0, out + err
    rotated, live = files_oldest_first(db)
    assert f"{rotated}: sealed to " in out and "(batches 1..5, by epoch 2 " in out
    assert f"{live}: sealed to " in out and "(batches 6..12, by epoch 4 " in out
    assert "NOT YET SEALED" not in out and out.rstrip().endswith("seals hold")


@pytest.mark.parametrize("batch,epoch,which", [(2, 1, 0), (4, 2, 0), (7, 3, 1), (11, 4, 1)])
def test_edited_sealed_row_rechained_is_found(sealed, batch, epoch, which):
    """A record of a sealed batch edited and every unkeyed hash after it recomputed: verify
    --verify-key fails, naming the file that holds the first batch no longer as sealed, and
    the epoch whose seal the edit falls under."""
    db, _, key = sealed
    path = files_oldest_first(db)[which]
    con = writable(path)
    con.execute("UPDATE events SET argv = ? WHERE id = (SELECT min(id) FROM events WHERE batch_id = ?)",
                (b"sh\0-c\0true", batch))
    con.commit()
    con.close()
    rechain(db)
    out = forged(db, key)
    lines = [line for line in out.splitlines() if f"epoch {epoch} sealed" in line]
    assert lines and lines[0].startswith(f"{path} batch "), out


def test_deleted_sealed_batch_relinked_is_found(sealed):
    """A sealed batch in the middle of the live file deleted and the chain re-linked over the
    hole: found, in the live file, under the epoch that sealed it (4: batches 9..12), naming
    what those batches hold."""
    db, _, key = sealed
    live = files_oldest_first(db)[1]
    drop_batches(live, [9])
    rechain(db)
    out = forged(db, key)
    assert (f"{live} batch 12: batch 12 is not what epoch 4 sealed: something sealed in epoch 4 or "
            "before was changed, and the hashes after it recomputed; since the last seal that holds, "
            "batches 9..12 hold 40 records, run 1's stopped_ns") in out, out


def test_rotated_file_replaced_by_consistent_forgery_is_found(sealed, tmp_path):
    """The rotated file replaced by one written from scratch (other records, the same batch
    ids, its seals copied over) and the later file re-linked to it: found, naming the forged
    file and the first epoch whose seal it breaks."""
    db, _, key = sealed
    rotated = files_oldest_first(db)[0]
    other = tmp_path / "other"
    bw = BatchWriter(other, {"keep": 0})
    bw.open()
    for n in range(0, 60, 20):  # batches 1..5: the start, three of records, the stop
        bw.write(second_rows(20, n, exit_code=lambda pid: 0))  # every exit now "succeeded"
    bw.close()
    genuine = sqlite3.connect(rotated).execute("SELECT * FROM seals").fetchall()
    os.chmod(rotated, 0o644)
    shutil.copyfile(other / "audit.db", rotated)
    con = sqlite3.connect(rotated)
    con.executemany("INSERT INTO seals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", genuine)
    con.commit()
    con.close()
    rechain(db)
    out = forged(db, key)
    assert f"{rotated} batch 1: batch 1 is not what epoch 0 sealed" in out, out


def unstop(path: Path) -> None:
    """The run's stop time taken out, as whoever cut its stop batch off does (else the stop is a
    value no batch recorded)."""
    con = writable(path)
    con.execute("UPDATE runs SET stopped_ns = NULL")
    con.commit()
    con.close()


def test_truncated_newest_sealed_batches_are_found(sealed):
    """The newest sealed batches (the last records, 11, and the stop, 12) cut off the live file,
    the run made to look as if it died and its counters made to agree: the stop seal names a
    batch no file holds."""
    db, _, key = sealed
    live = files_oldest_first(db)[1]
    drop_batches(live, [11, 12])
    unstop(live)
    rechain(db)
    out = forged(db, key)
    assert f"{live} batch 12: epoch 4 sealed batch 12, which no file holds" in out, out


def test_truncation_with_its_seals_removed_is_found(sealed):
    """Batches 11 and 12 cut off and the stop seal that covered them removed too: with the
    directory (no daemon holds its lock) the last seal left is not a stop seal, and that is
    a problem at once; with the files by name, once more than an epoch has passed since it.
    Within that epoch, with nothing known of the daemon, what follows the last seal is reported
    as not yet sealed, never as sealed."""
    db, _, key = sealed
    live = files_oldest_first(db)[1]
    drop_batches(live, [11, 12])
    unstop(live)
    drop_seals(live, [4])
    rechain(db)
    out = forged(db, key)
    assert f"{live}: no daemon is writing here, and the last seal, epoch 3 (epoch, " in out, out

    later = time.time_ns() + 3600 * 10**9
    status, out, err = check(db, key, files=True, now_ns=later)
    assert status == 1 and f"{live}: the last seal, epoch 3 (epoch, " in out, out + err

    last_seal = seals_in(db)[-1]
    assert last_seal[:2] == (3, "epoch")
    status, out, err = check(db, key, files=True)
    assert status == 0, out + err
    line = next(line for line in out.splitlines() if line.startswith(f"{live}:"))
    assert "(batches 6..8, by epoch 3 " in line and "40 records in batches 9..10 " in line and "NOT YET SEALED" in line
    assert "epoch 4 is open" in line


def test_removed_middle_seal_is_found(sealed):
    """A seal removed from between others (epoch 2, the rotation's): its number is missing,
    and whoever holds a later key cannot make it again."""
    db, _, key = sealed
    rotated = files_oldest_first(db)[0]
    drop_seals(rotated, [2])
    status, out, err = check(db, key)
    assert status == 1 and "the seals of epoch 2 are missing" in out, out


def test_forged_seal_with_current_key_is_found(sealed):
    """An attacker holding the state (the current key, epoch 5's) rewrites the stop seal of
    epoch 4 with it, over a live file whose last records are cut out: the seal does not verify."""
    db, state_dir, key = sealed
    live = files_oldest_first(db)[1]
    state = seal.State.load(state_dir)
    drop_batches(live, [11])
    rechain(db)
    con = writable(live)
    bid, h = con.execute("SELECT id, hash FROM batches ORDER BY id DESC LIMIT 1").fetchone()
    s = dict(epoch=4, key_id=state.key_id, reason="stop", sealed_ns=time.time_ns(), batch_id=bid,
             batch_hash=h, interval_s=EPOCH_S)
    s["mac"] = seal.mac(state.key, s)
    con.execute("UPDATE seals SET sealed_ns = ?, batch_id = ?, batch_hash = ?, mac = ? WHERE epoch = 4",
                (s["sealed_ns"], bid, h, s["mac"]))
    con.commit()
    con.close()
    out = forged(db, key)
    assert f"{live}: epoch 4: its seal does not verify with this key" in out, out


def test_edits_in_the_open_epoch_are_not_yet_sealed(tmp_path):
    """While the daemon runs (the writer holds the lock), batches after the last seal edited
    and rechained: verify passes the chain but says those batches are NOT YET SEALED, with the
    open epoch; the sealed part ends at the last sealed batch."""
    state, db = tmp_path / "seal", tmp_path / "db"
    key = seal.setup(state, EPOCH_S)
    bw = writer(db, state)
    try:
        bw.write(second_rows(20)), bw.write(second_rows(20, 20))
        next_epoch()
        bw.maybe_rotate()  # epoch 1 seals batches 1..3 (the run's start, two of records)
        bw.write(second_rows(20, 40)), bw.write(second_rows(20, 60))
        con = sqlite3.connect(db / "audit.db")
        con.execute("UPDATE events SET argv = ? WHERE batch_id = 5", (b"forged",))
        con.commit()
        con.close()
        rechain(db)
        status, out, err = check(db, key)
        assert status == 0, out + err
        line = next(line for line in out.splitlines() if line.startswith(f"{db / 'audit.db'}:"))
        assert "(batches 1..3, by epoch 1 " in line, line
        assert "40 records in batches 4..5" in line and "NOT YET SEALED: epoch 2 is open" in line, line
    finally:
        bw.close()


# --- the keys ---------------------------------------------------------------------------

def test_state_holds_no_earlier_key(sealed):
    """After epochs 0..4: the state file holds epoch 5's key and none of K0..K4, raw or in hex,
    nor does anything else in the state directory; the current key verifies none of the seals
    made, while each epoch's own key (from the verification key) verifies its seal; and the
    current key taken as a verification key fails verify."""
    db, state_dir, key = sealed
    keys = key.keys()
    earlier = [next(keys) for _ in range(5)]
    current = next(keys)
    state = seal.State.load(state_dir)
    assert state.epoch == 5 and bytes(state.key) == current
    blobs = [p.read_bytes() for p in state_dir.iterdir()]
    assert [p.name for p in state_dir.iterdir()] == ["state"]
    for k in earlier:
        for blob in blobs:
            assert k not in blob and k.hex().encode() not in blob
    assert current.hex().encode() in blobs[0]  # the test sees a key where there is one

    made = [dict(zip(seal.FIELDS + ("mac",), row)) for row in all_seal_rows(db)]
    assert [s["epoch"] for s in made] == [0, 1, 2, 3, 4]
    for s, k in zip(made, earlier):
        assert seal.mac_matches(k, s) and not seal.mac_matches(state.key, s)
    stolen = seal.VerifyKey(bytes(state.key), key.created_s, key.interval_s)
    status, out, err = check(db, stolen)
    assert status == 1 and f"the newest seal is of key {key.id}, which was not given" in out, out
    assert "sealed to" not in out


def all_seal_rows(db: Path) -> list[tuple]:
    rows = []
    for path in files_oldest_first(db):
        con = sqlite3.connect(path)
        rows += con.execute(f"SELECT {', '.join(seal.FIELDS)}, mac FROM seals ORDER BY id").fetchall()
        con.close()
    return rows


def test_key_evolution_is_sha256_of_the_domain_and_the_key():
    """K(n+1) = SHA-256("auditd-lite seal evolve 1\\0" || K(n)) as docs/sealing.md gives it, and
    the MAC is HMAC-SHA256 over the documented fields: recomputed with another implementation
    (the cryptography package's) than the one seal.py uses (the standard library's)."""
    from cryptography.hazmat.primitives import hashes, hmac as c_hmac

    def sha256(data: bytes) -> bytes:
        h = hashes.Hash(hashes.SHA256())
        h.update(data)
        return h.finalize()

    k0 = bytes(range(32))
    assert seal.evolve(k0) == sha256(b"auditd-lite seal evolve 1\0" + k0)
    assert seal.key_id(k0) == sha256(b"auditd-lite seal key id 1\0" + k0).hex()[:16]
    s = dict(epoch=7, key_id="ab" * 8, reason="epoch", sealed_ns=1, batch_id=2, batch_hash="3:" + "0" * 64,
             interval_s=900)
    m = c_hmac.HMAC(k0, hashes.SHA256())
    m.update(b"auditd-lite seal 1\0" + chain.serialize(tuple(s[f] for f in seal.FIELDS)))
    s["mac"] = seal.mac(k0, s)
    assert s["mac"] == m.finalize().hex() and seal.mac_matches(k0, s)
    assert not seal.mac_matches(seal.evolve(k0), s) and not seal.mac_matches(k0, dict(s, batch_id=3))


# --- crashes ----------------------------------------------------------------------------

def test_seal_a_crash_kept_out_of_the_file_is_put_back(tmp_path):
    """The state after a kill -9 between the state file and the database: the state holds the
    next key and the seal, the file not the seal. The next start puts the seal back from the
    state, then seals its start; the numbers have no hole and verify passes, noting that the
    daemon died."""
    state, db = tmp_path / "seal", tmp_path / "db"
    key = seal.setup(state, EPOCH_S)
    bw = writer(db, state)
    bw.write(second_rows(20))
    next_epoch()
    bw.maybe_rotate()
    bw.close(clean=False)  # no stop seal: as a daemon killed
    drop_seals(db / "audit.db", [1])  # the epoch's seal never reached the file
    assert seals_in(db) == [(0, "start", 1)] and seal.State.load(state).epoch == 2
    bw = writer(db, state)
    bw.write(second_rows(20, 20))
    bw.close()
    assert seals_in(db) == [(0, "start", 1), (1, "epoch", 2), (2, "start", 3), (3, "stop", 5)]
    status, out, err = check(db, key)
    assert status == 0, out + err
    assert "epoch 2 began at a start" in err and "ended without a stop seal: the daemon died" in err


def test_state_that_cannot_be_written_stops_no_record(tmp_path):
    """The sealing state on a full filesystem: the epoch's seal fails (said in the log), every
    record is still written; once there is room, the next seal takes the same epoch number
    (nothing was skipped) and the directory verifies."""
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        state, db = mnt / "seal", tmp_path / "db"
        key = seal.setup(state, EPOCH_S)
        bw = writer(db, state)
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            os.close(fd)
        bw.write(second_rows(20))
        next_epoch()
        bw.maybe_rotate()  # due: fails
        assert seal.State.load(state).epoch == 1
        bw.write(second_rows(20, 20))
        filler.unlink()
        next_epoch()
        bw.maybe_rotate()
        bw.close()
        assert seals_in(db) == [(0, "start", 1), (1, "epoch", 3), (2, "stop", 4)]
        con = sqlite3.connect(db / "audit.db")
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 40
        con.close()
        assert check(db, key)[0] == 0


# --- the command line -----------------------------------------------------------------

def test_stats_counts_the_seals_and_names_the_newest(pristine, tmp_path):
    """stats reports, per file and in all, as many seals as the files' seals tables hold, their
    key chain, and the newest (the stop seal: epoch 4, in the live file); a directory written
    without sealing says none."""
    db, _, key = pristine
    s = json.loads(run_cli("stats", "--db-dir", db, "--format", "json", check=0).stdout)
    per_file = {}
    for path in files_oldest_first(db):
        con = sqlite3.connect(path)
        per_file[str(path)] = con.execute("SELECT count(*) FROM seals").fetchone()[0]
        con.close()
    assert {f["path"]: f["seals"] for f in s["files"]} == per_file
    assert s["sealing"]["seals"] == sum(per_file.values()) == len(seals_in(db))
    assert s["sealing"]["key_ids"] == [key.id]
    last = s["sealing"]["last"]
    assert (last["epoch"], last["reason"], last["file"]) == (4, "stop", "audit.db")
    table = run_cli("stats", "--db-dir", db, check=0).stdout.decode()
    assert f"seals: {sum(per_file.values())} (key {key.id}), the newest epoch 4 (stop)" in table
    plain = tmp_path / "plain"
    bw = BatchWriter(plain, {"keep": 0})
    bw.open()
    bw.write(second_rows(5))
    bw.close()
    s = json.loads(run_cli("stats", "--db-dir", plain, "--format", "json", check=0).stdout)
    assert s["sealing"] == {"seals": 0, "key_ids": [], "last": None}
    assert "seals: none" in run_cli("stats", "--db-dir", plain, check=0).stdout.decode()


def test_setup_prints_the_key_once_and_keeps_the_state_private(tmp_path):
    """seal setup prints the verification key alone on standard output (what to keep), the rest
    on standard error; the state is 0600 in a 0700 directory and holds the key only until the
    first seal; a second setup is refused (exit 2, one line) unless --force; status prints no key."""
    state = tmp_path / "seal"
    p = run_cli("seal", "setup", "--seal-state", state, "--interval", "90s", check=0)
    text = p.stdout.decode().strip()
    key = seal.VerifyKey.parse(text)
    assert len(text.splitlines()) == 1 and key.interval_s == 90
    assert "keep it off this machine" in p.stderr.decode()
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert os.stat(state / "state").st_mode & 0o777 == 0o600
    again = run_cli("seal", "setup", "--seal-state", state, check=2)
    assert again.stdout == b"" and len(again.stderr.decode().splitlines()) == 1
    assert "already set up" in again.stderr.decode()
    status = run_cli("seal", "status", "--seal-state", state, check=0).stdout.decode()
    assert f"key id    {key.id}" in status and key.seed.hex() not in status
    renewed = run_cli("seal", "setup", "--seal-state", state, "--force", check=0).stdout.decode().strip()
    assert seal.VerifyKey.parse(renewed).seed != key.seed


@pytest.mark.parametrize("argv,message", [
    (["seal", "setup", "--interval", "0s"], "bad duration"),
    (["seal", "setup", "--interval", "1.5s"], "bad duration"),
    (["verify", "--verify-key", "auditd-lite-seal:1:abcd:1:1"], "verification key is damaged"),
    (["verify", "--verify-key", "nonsense"], "not a verification key"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, message):
    """A bad --interval or --verify-key: exit 2, one line naming it, nothing made."""
    status, out, err = cli_in_process(*argv, *(["--seal-state", tmp_path / "s"] if argv[0] == "seal" else
                                               ["--db-dir", tmp_path]))
    assert status == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_verify_without_the_key_says_seals_were_not_checked(sealed):
    """Without --verify-key verify checks the chain as before and says the seals were not
    checked; with the key of another setup it fails, naming the key id of the seals it could not
    check, and calls nothing sealed."""
    db, _, key = sealed
    status, out, err = cli_in_process("verify", "--db-dir", db)
    assert status == 0 and "the 5 seals in these files were not checked: give --verify-key" in err
    other = seal.setup(db.parent / "other", EPOCH_S)
    status, out, err = cli_in_process("verify", "--db-dir", db, "--verify-key", other.text())
    assert status == 1 and f"the newest seal is of key {key.id}, which was not given" in out, out
    assert "sealed to" not in out and f"5 seals of key {key.id}, which was not given, not checked" in err


def test_verify_key_from_a_file(sealed, tmp_path):
    """--verify-key also takes the file the key was saved in (seal setup > FILE)."""
    db, _, key = sealed
    saved = tmp_path / "key.txt"
    saved.write_text(key.text() + "\n")
    status, out, err = cli_in_process("verify", "--db-dir", db, "--verify-key", saved)
    assert status == 0 and out.rstrip().endswith("seals hold"), out + err


# --- the real daemon ---------------------------------------------------------------------

def state_keys(key: seal.VerifyKey, n: int) -> list[bytes]:
    keys = key.keys()
    return [next(keys) for _ in range(n)]


@pytest.mark.kernel
def test_daemon_seals_and_never_logs_a_key(daemon_factory, tmp_path):
    """The real daemon with a one-second epoch: a start seal, epoch seals while it runs and a
    stop seal; verify --verify-key passes; no key of any epoch is in its log."""
    state = tmp_path / "seal"
    key = seal.setup(state, EPOCH_S)
    d = daemon_factory("--seal-state", state)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        subprocess.run(["/bin/true"])
        time.sleep(0.05)
    d.stop()
    got = seals_in(d.db_dir)
    assert got[0][1] == "start" and got[-1][1] == "stop" and [e for e, _, _ in got] == list(range(len(got)))
    assert any(r == "epoch" for _, r, _ in got), got
    p = run_cli("verify", "--db-dir", d.db_dir, "--verify-key", key.text(), check=0)
    assert b"seals hold" in p.stdout
    log = d.log
    assert log_events(log, "sealing_on") and len(log_events(log, "sealed")) == len(got)
    for k in state_keys(key, len(got) + 1):
        assert k.hex() not in log


@pytest.mark.kernel
def test_kill9_never_leaves_a_state_that_forges_the_past(tmp_path):
    """The real daemon killed with SIGKILL at five moments of its epochs: after each, the state's
    epoch is past every seal in the files and in the state, and holds no earlier key; each next
    start puts back what the crash kept out and seals its start; at the end verify
    --verify-key passes, noting each death."""
    state, db = tmp_path / "seal", tmp_path / "db"
    key = seal.setup(state, EPOCH_S)
    d = None
    try:
        for i in range(5):
            d = Daemon(db, tmp_path / f"daemon{i}.log", "--seal-state", state).start()
            time.sleep(0.4 + 0.37 * i)
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            now = seal.State.load(state)
            made = [e for e, _, _ in seals_in(db)] + [s["epoch"] for s in now.recent]
            assert now.epoch > max(made), (now.epoch, made)
            blob = (state / "state").read_bytes()
            for k in state_keys(key, now.epoch):
                assert k.hex().encode() not in blob and k not in blob
        d = Daemon(db, tmp_path / "daemon-last.log", "--seal-state", state).start()
        d.stop()
    finally:
        if d is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    got = [e for e, _, _ in seals_in(db)]
    assert got == list(range(len(got))), got
    p = run_cli("verify", "--db-dir", db, "--verify-key", key.text())
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    assert p.stderr.decode().count("ended without a stop seal: the daemon died") == 5


def test_state_file_is_json_without_secrets_beyond_the_current_key(sealed):
    """The state's fields: its format, key id, epoch, the current key, the epoch length, when
    it was made and the recent seals (public: they are in the files too)."""
    _, state_dir, _ = sealed
    data = json.loads((state_dir / "state").read_text())
    assert sorted(data) == ["created_ns", "epoch", "format", "interval_s", "key", "key_id", "recent"]
    assert [s["epoch"] for s in data["recent"]] == [0, 1, 2, 3, 4]


def test_a_new_key_chain_after_setup_force(sealed):
    """`seal setup --force` on a directory sealed with another key: the new chain begins at epoch
    0 in the same files (the epoch numbers of the two chains do not collide). With the new key
    alone the files verify (the old chain's seals named, not checked: the new start seal covers
    everything before it); with the old key alone verify fails, since the newest seals are the
    new key's; with both, both chains are checked and pass."""
    db, state, old = sealed
    new = seal.setup(state, EPOCH_S, force=True)
    bw = writer(db, state)
    bw.write(second_rows(20, 200))
    bw.close()
    assert [(e, r) for e, r, _ in seals_in(db)].count((0, "start")) == 2
    status, out, err = check(db, new)
    assert status == 0 and f"5 seals of key {old.id}, which was not given, not checked" in err, out + err
    status, out, err = check(db, old)
    assert status == 1 and f"the newest seal is of key {new.id}, which was not given" in out, out
    status, out, err = check(db, [old, new])
    assert status == 0 and "not checked" not in err, out + err
    assert f"by epoch 1 of key {new.id}" in out, out
