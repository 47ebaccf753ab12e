"""Checkpoints: the head of the chain, signed with a key the database does not hold.

A hash chain proves that records were not changed *relative to each other*; someone who
can write the file can still cut its tail or rewrite it whole and recompute every hash.
A checkpoint pins the head — ``(seq, head_hash)`` — with an HMAC-SHA256 under a key kept
outside the database and the state directory (``_keys``), and names
the previous checkpoint's MAC, so checkpoints form their own chain that cannot be
forged, reordered or cut in the middle without the key.

Each checkpoint is stored twice: in the ``audit_checkpoints`` table and as one JSON line
in ``<state>/audit-checkpoints.log``. Neither copy needs to be secret (the MAC protects
them); two copies mean that deleting one of them is itself visible. The writer appends
to the file first (fsync) and then inserts into the table, so in a crash the file can be
one checkpoint ahead of the table, never behind; the writer repairs that on its next
start.

A MAC is ``HMAC-SHA256(key, canonical_json(body))`` over every field but ``mac``.

The head file. Both copies live in the state directory, so someone who can write it can
delete the whole log — records, table and file — and leave nothing, or a fresh log of
their own. So the writer also keeps the last checkpoint it signed in
``<state-dir>-keys/audit-head``, beside the key and outside the state directory
(replaced atomically after each checkpoint). A log whose checkpoints end before the
head file's checkpoint was cut or replaced: the writer refuses it and verify reports it.
Each checkpoint is also logged (logger ``engine.audit.checkpoint``, one line with the
checkpoint's JSON) so that journald or a log shipper carries a copy off the host.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

import attrs

from ..canonical import canonical_json
from ._keys import default_key_path

CHECKPOINT_LOG_NAME: Final = "audit-checkpoints.log"
HEAD_NAME: Final = "audit-head"
GENESIS_MAC: Final = "0" * 64
REASONS: Final = frozenset({"open", "periodic", "shutdown"})
CHECKPOINT_COLUMNS: Final = ("id", "time", "time_iso", "seq", "head_hash", "reason", "prev_mac", "mac")


@attrs.frozen(kw_only=True)
class Checkpoint:
    """One signed head. ``reason``: ``open`` (a writer started; it names the head it
    found), ``periodic`` (every N records or T seconds), ``shutdown`` (the writer stopped
    cleanly; nothing may follow it but the next ``open``)."""

    id: int
    time: float
    time_iso: str
    seq: int
    head_hash: str
    reason: str
    prev_mac: str
    mac: str

    def body(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CHECKPOINT_COLUMNS if name != "mac"}

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CHECKPOINT_COLUMNS}

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in CHECKPOINT_COLUMNS)

    def mac_ok(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, compute_mac(key, self.body()))

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> Checkpoint:
        """From a table row or a parsed file line; raises ``ValueError`` when malformed."""
        if set(value) != set(CHECKPOINT_COLUMNS):
            raise ValueError(f"checkpoint fields are {sorted(value)}, expected {sorted(CHECKPOINT_COLUMNS)}")
        types = {"id": int, "time": float, "time_iso": str, "seq": int, "head_hash": str,
                 "reason": str, "prev_mac": str, "mac": str}
        for name, kind in types.items():
            if type(value[name]) is not kind:
                raise ValueError(f"checkpoint field {name} is not a {kind.__name__}")
        fields: dict[str, Any] = dict(value)
        return cls(**fields)


def compute_mac(key: bytes, body: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json(dict(body)).encode("utf-8"), sha256).hexdigest()


def sign(key: bytes, *, id: int, time: float, time_iso: str, seq: int, head_hash: str,
         reason: str, prev_mac: str) -> Checkpoint:
    body: dict[str, Any] = {"id": id, "time": time, "time_iso": time_iso, "seq": seq, "head_hash": head_hash,
            "reason": reason, "prev_mac": prev_mac}
    return Checkpoint(mac=compute_mac(key, body), **body)


def head_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where the writer keeps the last checkpoint it signed (module docstring): in the
    key's default directory, beside the state directory, whatever key file is used."""
    return default_key_path(state_dir).parent / HEAD_NAME


def read_head(path: Path) -> Checkpoint | None:
    """The checkpoint in the head file, or None when there is none. Raises ``ValueError``
    for a file that is not one checkpoint."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Checkpoint.from_mapping(json.loads(data))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a checkpoint: {exc}") from None


def write_head(path: Path, checkpoint: Checkpoint) -> None:
    """Replace the head file atomically (a temporary file, fsync, rename, fsync of the
    directory): it always holds one whole checkpoint. Raises ``OSError``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, checkpoint_line(checkpoint))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@attrs.frozen
class FileCheckpoints:
    """What the checkpoint file holds: parsed lines, plus lines that did not parse."""

    checkpoints: tuple[Checkpoint, ...]
    bad_lines: tuple[tuple[int, str], ...]  # (1-based line number, why)
    torn_tail: bool  # the last line has no newline: a write cut by a crash
    exists: bool


def read_checkpoint_file(path: Path) -> FileCheckpoints:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return FileCheckpoints((), (), False, exists=False)
    lines = data.split(b"\n")
    torn = bool(lines and lines[-1])
    if not torn:
        lines = lines[:-1]
    good: list[Checkpoint] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        if torn and number == len(lines):
            break
        try:
            good.append(Checkpoint.from_mapping(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as exc:
            bad.append((number, f"not a checkpoint: {exc}"))
    return FileCheckpoints(tuple(good), tuple(bad), torn, exists=True)


def checkpoint_line(checkpoint: Checkpoint) -> bytes:
    return (canonical_json(checkpoint.to_dict()) + "\n").encode("utf-8")
