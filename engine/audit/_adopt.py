"""What the writer checks before it continues a log it finds: nothing unsigned is adopted.

A writer that starts signs an ``open`` checkpoint over the head it found. Whatever that
head vouches for becomes, from then on, indistinguishable from what the service wrote —
so before signing, the writer checks that the key already vouches for it:

- every checkpoint's MAC verifies and the checkpoints form one chain;
- records exist only if a checkpoint exists (a log of records and no checkpoint was
  written by someone without the key: both checkpoint copies deleted, a fresh chain of
  invented records put in their place);
- the record at the last checkpoint's seq has the hash that checkpoint pinned (else the
  records were rewritten), and no checkpoint pins a seq past the last record (else the
  log was cut);
- after a ``shutdown`` checkpoint nothing may follow (records written while the service
  was stopped); after an ``open`` or ``periodic`` one (an unclean stop), what follows must
  chain from the pinned head, record by record;
- the head file beside the key (``_checkpoints``) names a checkpoint the log still holds,
  with the same MAC (else the log was deleted and replaced, or cut, or restored from an
  older copy).

Any failure raises :class:`AuditAdoptionError`: the service does not start, and the
message names the problem and the two commands an operator has: ``sconnect audit
verify`` to see everything that is wrong, ``sconnect audit archive`` to set the log aside
(kept for investigation) and start a new one. Cost: the checkpoints (a few per thousand
records) and the records after the last checkpoint (at most ``checkpoint_every`` after an
unclean stop), not the whole log; ``verify`` is the full check.

This is the single writer's rule set (SQLite). A chain that several instances write
(PostgreSQL) adopts differently, at every commit: ``_shared`` (it reuses the checks
below that still hold there).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ._checkpoints import GENESIS_MAC, Checkpoint
from ._errors import AuditAdoptionError
from ._record import COLUMNS, GENESIS_HASH, AuditRecord

__all__ = ["check_adoptable", "check_chain", "check_head_file", "check_tail", "refusal"]

Refuse = Callable[[str], AuditAdoptionError]


def refusal(state_dir: Path, problem: str) -> AuditAdoptionError:
    """The error a writer raises for ``problem``, naming what the operator can do."""
    return AuditAdoptionError(
        f"{state_dir}: refusing to continue this audit log: {problem}. Nothing was written. "
        f"Inspect it with `sconnect audit verify --state-dir {state_dir}`; to keep it as evidence "
        f"and start a new log, run `sconnect audit archive --state-dir {state_dir}`"
    )


def check_adoptable(conn: sqlite3.Connection, state_dir: Path, key: bytes, checkpoints: list[Checkpoint],
                    head: Checkpoint | None, head_seq: int) -> None:
    """Raise :class:`AuditAdoptionError` unless the key vouches for the whole log found
    (module docstring). ``checkpoints`` are the table's, after the writer's repair from
    the file; ``head`` is the head file's checkpoint, if any."""
    refuse = partial(refusal, state_dir)
    check_chain(refuse, key, checkpoints)
    if head is not None:
        check_head_file(refuse, key, checkpoints, head)
    if not checkpoints:
        if head_seq:
            raise refuse(f"it holds {head_seq} records but no checkpoint signed with the key: "
                         "they were not written by this service (or both copies of its checkpoints were "
                         "deleted)")
        return
    last = checkpoints[-1]
    if last.seq > head_seq:
        raise refuse(f"checkpoint {last.id} pins record {last.seq} but the log ends at "
                     f"{head_seq}: records were cut off")
    if last.reason == "shutdown" and head_seq > last.seq:
        raise refuse(f"records {last.seq + 1}..{head_seq} follow the shutdown checkpoint "
                     f"{last.id} ({last.time_iso}): they were written while the service was stopped")
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_records WHERE seq >= ? ORDER BY seq, rowid",
                        (last.seq if last.seq > 0 else 1,))
    check_tail(refuse, rows, last, head_seq)


def check_chain(refuse: Refuse, key: bytes, checkpoints: Sequence[Checkpoint]) -> None:
    """Every checkpoint verifies with ``key`` and names the one before it."""
    previous: Checkpoint | None = None
    for checkpoint in checkpoints:
        if not checkpoint.mac_ok(key):
            raise refuse(f"checkpoint {checkpoint.id} does not verify with the key "
                         "(forged, altered, or signed with another key)")
        expected = (1, GENESIS_MAC) if previous is None else (previous.id + 1, previous.mac)
        if (checkpoint.id, checkpoint.prev_mac) != expected:
            raise refuse(f"checkpoint {checkpoint.id} does not follow "
                         f"{'the start' if previous is None else f'checkpoint {previous.id}'}")
        previous = checkpoint


def check_head_file(refuse: Refuse, key: bytes, checkpoints: Sequence[Checkpoint], head: Checkpoint) -> None:
    """The log still holds the checkpoint the head file names, the same one."""
    where = f"the head file (checkpoint {head.id}, seq {head.seq}, {head.time_iso})"
    if not head.mac_ok(key):
        raise refuse(f"{where} does not verify with the key")
    found = next((c for c in checkpoints if c.id == head.id), None)
    if found is None:
        ends = f"end at checkpoint {checkpoints[-1].id}" if checkpoints else "are gone"
        raise refuse(f"{where} names a checkpoint the log does not hold (its checkpoints {ends}): "
                     "the log was deleted or replaced, cut, or restored from an older copy")
    if found.mac != head.mac:
        raise refuse(f"checkpoint {head.id} in the log is not the one {where} names: the log was replaced")


def check_tail(refuse: Refuse, rows: Iterable[Sequence[Any]], last: Checkpoint, head_seq: int) -> None:
    """The record ``last`` pinned, then every record after it (``rows``: from that seq on,
    in seq order), linked one by one up to ``head_seq``."""
    prev_seq, prev_hash = last.seq, last.head_hash
    pinned_seen = last.seq == 0
    for row in rows:
        try:
            record = AuditRecord.from_row(row)
            computed = record.computed_hash()
        except (ValueError, TypeError):
            raise refuse(f"record {row[0]!r} is not a well-formed record") from None
        if computed != record.hash:
            raise refuse(f"record {record.seq} no longer matches its hash (edited)")
        if record.seq == last.seq and last.seq > 0:
            if record.hash != last.head_hash:
                raise refuse(f"record {record.seq} is not the one checkpoint {last.id} pinned: "
                             "the records were rewritten")
            pinned_seen = True
            continue
        if not pinned_seen:
            raise refuse(f"record {last.seq}, pinned by checkpoint {last.id}, is missing")
        if record.seq != prev_seq + 1 or record.prev_hash != prev_hash:
            raise refuse(f"record {record.seq} does not follow record {prev_seq} "
                         "(inserted, deleted or rewritten after the last checkpoint)")
        prev_seq, prev_hash = record.seq, record.hash
    if not pinned_seen:
        raise refuse(f"record {last.seq}, pinned by checkpoint {last.id}, is missing")
    if prev_seq != head_seq or (last.seq == 0 and last.head_hash != GENESIS_HASH):
        raise refuse(f"the records after checkpoint {last.id} do not lead to the head {head_seq}")
