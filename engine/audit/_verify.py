"""``verify``: is the audit log what the service wrote?

What verify trusts: the key (``<state-dir>-keys/audit-key`` or ``SCONNECT_AUDIT_KEY_FILE``)
and nothing in the database or the checkpoint file that the key does not vouch for. So:

1. The chain. Walking records by ``seq``: every hash must match the record's content
   (else the record was *edited*; if its content is another position's genuine record,
   it was *reordered*), ``seq`` must go 1, 2, 3 ... (a gap: *deleted*; a repeat:
   *inserted*), and each ``prev_hash`` must be the hash of the record before (else a
   record was *inserted* there, or its predecessor rewritten with a recomputed hash).
2. The checkpoints, from both copies (table and file). Only checkpoints whose HMAC
   verifies count; they must form one chain (ids 1, 2, 3 ..., each naming the previous
   MAC), and each copy must hold every checkpoint of the other — except that the file
   may be one checkpoint ahead (the writer appends to the file before the table).
3. Records against checkpoints. A checkpoint naming a seq beyond the last record means
   the log was *truncated*; a record whose hash differs from the checkpoint's pinned
   head means the log was *rewritten* (even if its own chain is consistent). After a
   ``shutdown`` checkpoint only the next start's ``open`` checkpoint may come, at the
   same head: records between them, or after a final ``shutdown``, were *appended*
   while the service was stopped.

Not errors, but warnings: records after the last checkpoint when that checkpoint is
not a ``shutdown`` (the writer is running, or stopped uncleanly; they are vouched for by
nothing yet), and such records adopted by the next start.

4. The head file (``<state-dir>-keys/audit-head``, the last checkpoint the writer signed):
   the log must still hold that checkpoint. A log deleted and replaced whole, or cut
   back to an earlier checkpoint, fails here.

What verify cannot catch: someone who can write the key's directory as well as the state
directory (root, in practice) — they can cut the log and its head file back together.
Against that, ship each checkpoint off the machine as it is written (the writer logs
each one on the ``engine.audit.checkpoint`` logger: journald, a log shipper, a WORM
bucket), and compare.

A key that cannot be read is reported as a problem of kind ``key`` (``VerifyReport
.key_unusable``): nothing is known to be wrong, but the checkpoints were not checked.

Consistency with a running writer: the file is read before and after one read
transaction over the database; checkpoints newer than both are ignored, so a concurrent
writer never looks like tampering.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs

from ._checkpoints import (
    CHECKPOINT_COLUMNS,
    CHECKPOINT_LOG_NAME,
    GENESIS_MAC,
    REASONS,
    Checkpoint,
    FileCheckpoints,
    head_path,
    read_checkpoint_file,
    read_head,
)
from ._db import connect_reader
from ._errors import AuditKeyError
from ._keys import key_path, read_key
from ._record import COLUMNS, GENESIS_HASH, AuditRecord

__all__ = ["Problem", "VerifyReport", "verify"]

MAX_PROBLEMS: Final = 100
PROBLEM_KINDS: Final = frozenset(
    {"edited", "reordered", "deleted", "inserted", "truncated", "rewritten", "appended", "checkpoint", "key"})


@attrs.frozen
class Problem:
    """One thing wrong. ``seq`` is the first record concerned, or None for a problem with
    the checkpoints themselves; ``kind`` is one of :data:`PROBLEM_KINDS`."""

    seq: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.message}" if self.seq is not None \
            else f"{self.kind}: {self.message}"


@attrs.frozen(kw_only=True)
class VerifyReport:
    """The result of :func:`verify`. ``ok`` is True when there are no problems
    (warnings allowed). ``problems`` is sorted: record problems by seq, then the rest."""

    records: int
    checkpoints: int
    head_seq: int
    head_hash: str
    last_checkpoint: Checkpoint | None
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def key_unusable(self) -> bool:
        """The only problem is that the key could not be read: the checkpoints were not
        checked, nothing is known to be wrong (``sconnect audit verify`` exits 3)."""
        return bool(self.problems) and all(p.kind == "key" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "last_checkpoint": None if self.last_checkpoint is None else self.last_checkpoint.to_dict(),
            "first_problem": None if self.first_problem is None else attrs.asdict(self.first_problem),
            "problems": [attrs.asdict(p) for p in self.problems],
            "warnings": list(self.warnings),
        }


def verify(state_dir: str | os.PathLike[str], *, key_file: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Check the whole audit log of ``state_dir`` (module docstring). Blocking; from
    async code use ``trio.to_thread``. Raises :class:`AuditNotFoundError` when there is
    no audit log; everything wrong inside one is reported, not raised."""
    state = Path(state_dir)
    log_path = state / CHECKPOINT_LOG_NAME
    problems: list[Problem] = []
    warnings: list[str] = []

    # The head file first: the writer replaces it only after both checkpoint copies hold
    # its checkpoint, so whatever it names is in the snapshot read below.
    head, head_problem = _read_head(state)
    if head_problem:
        problems.append(head_problem)
    before = read_checkpoint_file(log_path)
    conn = connect_reader(state)
    try:
        conn.execute("BEGIN")  # one snapshot for records and the checkpoint table
        table, table_problem = _table_checkpoints(conn)
        if table_problem:
            problems.append(table_problem)
        after = read_checkpoint_file(log_path)
        checkpoints = _merge(before, after, table, problems, warnings)
        key = _key(state, key_file, checkpoints, problems)
        trusted = _check_checkpoint_chain(checkpoints, key, problems) if key is not None else []
        walk = _Walk(conn, {c.seq for c in trusted}, problems)
        walk.run()
        conn.execute("COMMIT")
    finally:
        conn.close()

    if head is not None:
        _check_head(head, key, checkpoints, problems)
    if key is not None:
        _check_against_records(trusted, walk, problems, warnings)
    if walk.count and not checkpoints:
        problems.append(Problem(None, "checkpoint", "the log has records but no checkpoint at all: "
                                "both copies of the checkpoints were removed"))
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    if len(problems) > MAX_PROBLEMS:
        extra = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS], Problem(None, "checkpoint", f"... and {extra} more problems")]
    return VerifyReport(
        records=walk.count, checkpoints=len(checkpoints), head_seq=walk.last_seq,
        head_hash=walk.last_hash, last_checkpoint=checkpoints[-1] if checkpoints else None,
        problems=tuple(problems), warnings=tuple(warnings),
    )


def _read_head(state: Path) -> tuple[Checkpoint | None, Problem | None]:
    try:
        return read_head(head_path(state)), None
    except ValueError as exc:
        return None, Problem(None, "checkpoint", str(exc))
    except OSError as exc:
        return None, Problem(None, "key", f"cannot read the head file {head_path(state)}: {exc.strerror}")


def _check_head(head: Checkpoint, key: bytes | None, checkpoints: list[Checkpoint],
                problems: list[Problem]) -> None:
    """The log must still hold the checkpoint the writer last signed (``_checkpoints``)."""
    where = f"the head file names checkpoint {head.id} (seq {head.seq}, {head.time_iso})"
    if key is not None and not head.mac_ok(key):
        problems.append(Problem(None, "checkpoint", f"{where} but its MAC does not verify (forged or altered)"))
        return
    found = next((c for c in checkpoints if c.id == head.id), None)
    if found is None:
        ends = f"end at checkpoint {checkpoints[-1].id}" if checkpoints else "are gone"
        problems.append(Problem(head.seq + 1 if head.seq else None, "truncated",
                                f"{where}, which the log no longer holds (its checkpoints {ends}): the log was "
                                "deleted or replaced, cut, or restored from an older copy"))
    elif found.mac != head.mac:
        problems.append(Problem(None, "rewritten", f"{where}, and the log's checkpoint {head.id} is another one: "
                                "the log was replaced"))


def _table_checkpoints(conn: sqlite3.Connection) -> tuple[list[Checkpoint], Problem | None]:
    try:
        rows = conn.execute(f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM audit_checkpoints ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        return [], Problem(None, "checkpoint", f"the audit_checkpoints table cannot be read: {exc}")
    out = []
    for row in rows:
        try:
            out.append(Checkpoint.from_mapping(dict(zip(CHECKPOINT_COLUMNS, row, strict=True))))
        except ValueError as exc:
            return out, Problem(None, "checkpoint", f"checkpoint row {row[0]!r} is malformed: {exc}")
    return out, None


def _merge(before: FileCheckpoints, after: FileCheckpoints, table: list[Checkpoint], problems: list[Problem],
           warnings: list[str]) -> list[Checkpoint]:
    """Reconcile the file and the table into one list of checkpoints, by id."""
    for number, why in after.bad_lines:
        problems.append(Problem(None, "checkpoint", f"{CHECKPOINT_LOG_NAME} line {number}: {why}"))
    if after.torn_tail:
        warnings.append(f"{CHECKPOINT_LOG_NAME} ends in a torn line (a crash mid-write); ignored")
    # Checkpoints written after our snapshot began are not ours to judge.
    cutoff = max([c.id for c in before.checkpoints] + [c.id for c in table], default=0)
    in_file: dict[int, Checkpoint] = {}
    for checkpoint in after.checkpoints:
        if checkpoint.id > cutoff:
            continue
        if checkpoint.id in in_file and in_file[checkpoint.id] != checkpoint:
            problems.append(Problem(None, "checkpoint", f"{CHECKPOINT_LOG_NAME} holds two different "
                                    f"checkpoints {checkpoint.id}"))
        in_file.setdefault(checkpoint.id, checkpoint)
    in_table = {c.id: c for c in table}
    lost = sorted(set(in_table) - set(in_file))
    if table and not after.exists:
        problems.append(Problem(None, "deleted", f"{CHECKPOINT_LOG_NAME} is missing but the table "
                                f"has {len(table)} checkpoints: the file was deleted"))
    elif lost and in_file and lost == list(range(1, len(lost) + 1)) and min(in_file) == len(lost) + 1:
        # The file starts where a writer restarted it: what came before was deleted.
        problems.append(Problem(None, "deleted", f"checkpoints 1..{len(lost)} are in the table but not in "
                                f"{CHECKPOINT_LOG_NAME}, which starts at checkpoint {len(lost) + 1}: the file "
                                "was deleted (and a later start began a new one)"))
        for id_ in set(in_table) & set(in_file):
            if in_file[id_] != in_table[id_]:
                problems.append(Problem(None, "checkpoint", f"checkpoint {id_} differs between the table "
                                        f"and {CHECKPOINT_LOG_NAME}"))
    elif table:
        for id_, checkpoint in in_table.items():
            if id_ not in in_file:
                problems.append(Problem(None, "checkpoint", f"checkpoint {id_} is in the table but not in "
                                        f"{CHECKPOINT_LOG_NAME}: the file was edited"))
            elif in_file[id_] != checkpoint:
                problems.append(Problem(None, "checkpoint", f"checkpoint {id_} differs between the table "
                                        f"and {CHECKPOINT_LOG_NAME}"))
    table_max = max(in_table, default=0)
    for id_ in sorted(set(in_file) - set(in_table)):
        if id_ == max(in_file) and id_ == table_max + 1:
            warnings.append(f"checkpoint {id_} is only in {CHECKPOINT_LOG_NAME} (its table copy is written "
                            "next: a writer is running, or stopped mid-checkpoint; the next start copies it)")
        else:
            problems.append(Problem(None, "checkpoint", f"checkpoint {id_} is in {CHECKPOINT_LOG_NAME} but "
                                    "not in the table: rows were deleted"))
    merged = {**in_table, **in_file}  # a mismatch is reported above; the file is the older copy
    return [merged[i] for i in sorted(merged)]


def _key(state: Path, key_file: str | os.PathLike[str] | None, checkpoints: list[Checkpoint],
         problems: list[Problem]) -> bytes | None:
    path = key_path(state, key_file)
    try:
        return read_key(path)
    except AuditKeyError as exc:
        if checkpoints:
            problems.append(Problem(None, "key", f"cannot check the checkpoints: {exc}"))
        return None


def _check_checkpoint_chain(checkpoints: list[Checkpoint], key: bytes,
                            problems: list[Problem]) -> list[Checkpoint]:
    """The checkpoints whose MAC verifies, after reporting every break in their chain."""
    trusted: list[Checkpoint] = []
    previous: Checkpoint | None = None
    for checkpoint in checkpoints:
        expected_id = 1 if previous is None else previous.id + 1
        if not checkpoint.mac_ok(key):
            problems.append(Problem(None, "checkpoint", f"checkpoint {checkpoint.id}: its MAC does not verify "
                                    "(forged or altered, or signed with another key)"))
            previous = checkpoint
            continue
        if checkpoint.id != expected_id:
            problems.append(Problem(None, "checkpoint", f"checkpoints {expected_id}..{checkpoint.id - 1} "
                                    "are missing from both copies: deleted"))
        elif checkpoint.prev_mac != (GENESIS_MAC if previous is None else previous.mac):
            problems.append(Problem(None, "checkpoint", f"checkpoint {checkpoint.id} does not follow "
                                    f"checkpoint {expected_id - 1}"))
        if checkpoint.reason not in REASONS:
            problems.append(Problem(None, "checkpoint", f"checkpoint {checkpoint.id}: unknown reason "
                                    f"{checkpoint.reason!r}"))
        if trusted and checkpoint.seq < trusted[-1].seq:
            problems.append(Problem(None, "checkpoint", f"checkpoint {checkpoint.id} pins seq {checkpoint.seq}, "
                                    f"before checkpoint {trusted[-1].id}'s seq {trusted[-1].seq}"))
        trusted.append(checkpoint)
        previous = checkpoint
    return trusted


class _Walk:
    """One pass over the records in seq order, streaming (the log can be large)."""

    def __init__(self, conn: Any, pinned: set[int], problems: list[Problem],
                 rows: Iterable[tuple[Any, ...]] | None = None) -> None:
        # conn: anything whose execute(sql with ? placeholders, params) gives rows; rows:
        # the records in seq order, when the caller streams them itself (PostgreSQL).
        self.conn = conn
        self.rows = rows
        self.pinned = pinned
        self.problems = problems
        self.count = 0
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.seen: set[int] = set()  # seqs present (only those pinned, to bound memory)
        self.hash_at: dict[int, str] = {}  # stored hash at each pinned seq
        self.first_seq: int | None = None

    def run(self) -> None:
        expected, prev_hash, prev_seq = 1, GENESIS_HASH, 0
        trust_link = True  # False right after a flagged record: its stored hash explains nothing
        cursor = self.rows if self.rows is not None else \
            self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_records ORDER BY seq, rowid")
        for row in cursor:
            self.count += 1
            seq = row[0]
            if type(seq) is not int or seq < 1:
                self._problem(None, "inserted", f"a record with seq {seq!r} (not a positive integer)")
                trust_link = False
                continue
            if self.first_seq is None:
                self.first_seq = seq
            if seq == prev_seq:
                self._problem(seq, "inserted", "a second record with this seq")
                trust_link = False
                continue
            linked = trust_link
            if seq > expected:
                missing = f"record {expected} is" if seq == expected + 1 else f"records {expected}..{seq - 1} are"
                self._problem(expected, "deleted", f"{missing} missing (the chain jumps from {prev_seq} to {seq})")
                linked = False
            stored_hash = row[COLUMNS.index("hash")]
            computed = _computed_hash(row)
            if computed != stored_hash:
                original = self._original_seq(row, stored_hash)
                if original is not None:
                    self._problem(seq, "reordered", f"it holds the record written as seq {original} "
                                  "(its hash is genuine for that position, not this one)")
                else:
                    self._problem(seq, "edited", "its content no longer matches its hash")
                trust_link = False
            else:
                if linked and row[COLUMNS.index("prev_hash")] != prev_hash:
                    self._problem(seq, "inserted", f"it does not follow record {prev_seq} (prev_hash differs): "
                                  f"inserted here, or record {prev_seq} was rewritten with its hash recomputed")
                trust_link = True
            if seq in self.pinned:
                self.seen.add(seq)
                self.hash_at[seq] = stored_hash
            prev_hash, prev_seq, expected = stored_hash, seq, seq + 1
        self.last_seq, self.last_hash = prev_seq, prev_hash

    def _original_seq(self, row: tuple[Any, ...], stored_hash: str) -> int | None:
        """Where a record whose hash does not fit here came from: the record that names
        its hash as prev_hash follows its original position. Only for the first few
        problems (each costs a scan)."""
        if len(self.problems) > 10 or not isinstance(stored_hash, str):
            return None
        found = self.conn.execute("SELECT seq FROM audit_records WHERE prev_hash = ? LIMIT 1",
                                  (stored_hash,)).fetchone()
        candidates = [found[0] - 1] if found else []
        last = self.conn.execute("SELECT MAX(seq) FROM audit_records").fetchone()[0]
        if isinstance(last, int):
            candidates.append(last)  # the last record has no successor to point at it
        for candidate in candidates:
            if isinstance(candidate, int) and candidate != row[0] and \
                    _computed_hash((candidate, *row[1:])) == stored_hash:
                return candidate
        return None

    def _problem(self, seq: int | None, kind: str, message: str) -> None:
        self.problems.append(Problem(seq, kind, message))


def _computed_hash(row: tuple[Any, ...]) -> str | None:
    """The hash the row's content calls for, or None when the content is not even a
    well-formed record (a JSON column that does not parse, a wrong type)."""
    try:
        return AuditRecord.from_row(row).computed_hash()
    except (ValueError, TypeError):
        return None


def _check_against_records(trusted: list[Checkpoint], walk: _Walk, problems: list[Problem],
                           warnings: list[str], *, shared: bool = False) -> None:
    """``shared``: a log several instances write (PostgreSQL), where one instance's
    shutdown checkpoint may be followed by the others' records; what lies past the
    signed head is judged by the caller instead (``_pgverify``)."""
    last_seq = walk.last_seq
    truncated = [c for c in trusted if c.seq > last_seq]
    if truncated:
        worst = max(truncated, key=lambda c: c.seq)
        problems.append(Problem(last_seq + 1, "truncated", f"checkpoint {worst.id} ({worst.reason}, {worst.time_iso}) "
                                f"pins seq {worst.seq} but the log ends at {last_seq}: records "
                                f"{last_seq + 1}..{worst.seq} were cut off"))
    verified_upto = 0
    for checkpoint in trusted:
        if checkpoint.seq == 0:
            if checkpoint.head_hash != GENESIS_HASH:
                problems.append(Problem(None, "checkpoint", f"checkpoint {checkpoint.id} pins seq 0 with a "
                                        "non-genesis hash"))
            continue
        if checkpoint.seq > last_seq or checkpoint.seq not in walk.seen:
            continue  # truncated (above) or deleted (the walk named the gap)
        if walk.hash_at[checkpoint.seq] != checkpoint.head_hash:
            problems.append(Problem(verified_upto + 1, "rewritten", f"checkpoint {checkpoint.id} pins seq "
                                    f"{checkpoint.seq} with hash {checkpoint.head_hash[:16]}…, the log has "
                                    f"{walk.hash_at[checkpoint.seq][:16]}…: records {verified_upto + 1}.."
                                    f"{checkpoint.seq} were rewritten (the chain was recomputed)"))
            break
        verified_upto = max(verified_upto, checkpoint.seq)
    if shared:
        if trusted and last_seq > trusted[-1].seq:
            warnings.append(f"records {trusted[-1].seq + 1}..{last_seq} are after the last checkpoint "
                            f"({trusted[-1].id}): pinned only by the signed head until the next checkpoint")
        return
    for current, following in zip(trusted, trusted[1:], strict=False):
        if following.reason != "open" or following.seq <= current.seq:
            if current.reason == "shutdown" and following.reason != "open":
                problems.append(Problem(None, "checkpoint", f"checkpoint {following.id} ({following.reason}) "
                                        f"follows shutdown checkpoint {current.id} without a start"))
            continue
        span = f"records {current.seq + 1}..{following.seq}"
        if current.reason == "shutdown":
            problems.append(Problem(current.seq + 1, "appended", f"{span} were added while the service was "
                                    f"stopped (after shutdown checkpoint {current.id}, before the start "
                                    f"pinned by checkpoint {following.id})"))
        else:
            warnings.append(f"{span} were written before an unclean stop and pinned only at the next start "
                            f"(checkpoint {following.id}); nothing vouched for them in between")
    if trusted and last_seq > trusted[-1].seq:
        last = trusted[-1]
        span = f"records {last.seq + 1}..{last_seq}"
        if last.reason == "shutdown":
            problems.append(Problem(last.seq + 1, "appended", f"{span} come after the final shutdown checkpoint "
                                    f"{last.id} ({last.time_iso}): written while the service was stopped"))
        else:
            warnings.append(f"{span} are after the last checkpoint ({last.id}, {last.reason}) and not pinned "
                            "yet: the writer is running, or stopped without its shutdown checkpoint")

