"""What "adoption" means when several instances write one audit chain (PostgreSQL).

With SQLite there is one writer: at start it checks that the key vouches for the log it
finds (``_adopt``), then keeps the head in memory, and nobody else appends. With
PostgreSQL every instance appends to the same chain, so the head moves under each of them
and "continuing a log found" happens at every commit, not once at start. The rules:

- The head is a row (``audit_head``: ``seq``, ``hash``, ``key_id``, ``mac``), taken with
  ``SELECT ... FOR UPDATE`` by every commit and every checkpoint: two instances never
  both extend the same head (no fork), and seq stays gap-free.
- The head row is signed: ``mac = HMAC(derive(key, "audit head"), {seq, hash})``. A
  writer extends only a head whose MAC verifies with its key and past which no record
  exists. Someone with write access to the database but not the key can insert records
  (the tables refuse UPDATE and DELETE, not INSERT) but cannot sign a head over them, so
  the next commit of any instance refuses to adopt them (:func:`check_head`), and verify
  reports them as *appended*. This replaces SQLite's "nothing after a shutdown
  checkpoint" rule, which cannot hold when another instance keeps writing after one
  stops.
- ``key_id`` (a derived, non-secret fingerprint of the key) is set by the first writer.
  Every instance must hold the same key (the operator distributes the key file,
  ``SCONNECT_AUDIT_KEY_FILE``); one with another key is refused at start with a message
  saying so, before it writes anything.
- At start an instance also runs the SQLite checks that still mean something for a
  shared log, under the head lock: the checkpoints verify and chain, the last one pins a
  record that exists, the records after it link to the signed head, and this host's head
  file (the last checkpoint *it* signed, kept per database in ``<state>-keys/``) is still
  in the database. What it does not check: who stopped when (an instance's ``shutdown``
  checkpoint may be followed by other instances' records).

Blocking functions: run them in a worker thread, inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from typing import Final

import attrs

from ..canonical import canonical_json
from ._adopt import Refuse, check_chain, check_head_file
from ._checkpoints import Checkpoint
from ._errors import AuditAdoptionError
from ._keys import default_key_path, derive
from ._record import GENESIS_HASH

__all__ = ["SharedHead", "check_head", "head_file_for", "key_id", "shared_refusal", "sign_head"]

HEAD_FILE_PREFIX: Final = "audit-head-pg-"


@attrs.frozen
class SharedHead:
    """The ``audit_head`` row."""

    seq: int
    hash: str
    key_id: str | None
    mac: str | None


def key_id(key: bytes) -> str:
    """A fingerprint of the key that reveals nothing usable about it (a derived key's prefix)."""
    return derive(key, "audit key id").hex()[:16]


def sign_head(key: bytes, seq: int, head_hash: str) -> str:
    return hmac.new(derive(key, "audit head"), canonical_json({"seq": seq, "hash": head_hash}).encode(),
                    sha256).hexdigest()


def shared_refusal(where: str, problem: str) -> AuditAdoptionError:
    """The error for a shared log this instance will not extend: what to run, from any host."""
    return AuditAdoptionError(
        f"{where}: refusing to continue the shared audit log: {problem}. Nothing was written. Inspect it with "
        "`sconnect audit verify` (SCONNECT_DATABASE_URL and the audit key set) from any host"
    )


def check_head(refuse: Refuse, key: bytes, head: SharedHead, last_seq: int) -> None:
    """The head row is signed with ``key`` and no record lies past it (``last_seq``: the
    highest seq in the table, 0 when empty)."""
    if head.mac is None:
        if (head.seq, head.hash) != (0, GENESIS_HASH):
            raise refuse(f"the head (seq {head.seq}) is not signed: it was not written by this service")
    elif not hmac.compare_digest(head.mac, sign_head(key, head.seq, head.hash)):
        raise refuse(f"the head (seq {head.seq}) is not signed with this instance's key: it was altered")
    if last_seq != head.seq:
        if last_seq > head.seq:
            raise refuse(f"records {head.seq + 1}..{last_seq} lie past the signed head {head.seq}: they were "
                         "added by someone without the key")
        raise refuse(f"the signed head is record {head.seq} but the log ends at {last_seq}: records were cut off")


def check_at_start(refuse: Refuse, key: bytes, head: SharedHead, last_seq: int,
                   checkpoints: Sequence[Checkpoint], head_file: Checkpoint | None) -> None:
    """The checks of an instance joining the shared log (module docstring); the tail's
    links are :func:`engine.audit._adopt.check_tail`'s, run by the caller on the rows."""
    check_head(refuse, key, head, last_seq)
    check_chain(refuse, key, checkpoints)
    if head_file is not None:
        check_head_file(refuse, key, checkpoints, head_file)
    if not checkpoints:
        if head.seq:
            raise refuse(f"it holds {head.seq} records but no checkpoint signed with the key")
        return
    if checkpoints[-1].seq > head.seq:
        raise refuse(f"checkpoint {checkpoints[-1].id} pins record {checkpoints[-1].seq} but the log ends at "
                     f"{head.seq}: records were cut off")


def head_file_for(state_dir: str | Path, database: str) -> Path:
    """This host's head file for the shared log in ``database`` (``user@host:port/db``):
    one per database, beside the key's default place (``<state>-keys/``), so that a
    state directory once used with SQLite, or with another database, never confuses them."""
    tag = hashlib.sha256(database.encode()).hexdigest()[:12]
    return default_key_path(state_dir).parent / f"{HEAD_FILE_PREFIX}{tag}"

