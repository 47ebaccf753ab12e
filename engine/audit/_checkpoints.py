"""Checkpoints: the head of the chain, signed with a key the database does not hold.

A hash chain proves that records were not changed *relative to each other*; someone who
can write the file can still cut its tail or rewrite it whole and recompute every hash.
A checkpoint pins the head — ``(seq, head_hash)`` — with an HMAC-SHA256 under a key kept
outside the database (``<state>/audit-key``, or ``SCONNECT_AUDIT_KEY_FILE``), and names
the previous checkpoint's MAC, so checkpoints form their own chain that cannot be
forged, reordered or cut in the middle without the key.

Each checkpoint is stored twice: in the ``audit_checkpoints`` table and as one JSON line
in ``<state>/audit-checkpoints.log``. Neither copy needs to be secret (the MAC protects
them); two copies mean that deleting one of them is itself visible. The writer appends
to the file first (fsync) and then inserts into the table, so in a crash the file can be
one checkpoint ahead of the table, never behind; the writer repairs that on its next
start.

A MAC is ``HMAC-SHA256(key, canonical_json(body))`` over every field but ``mac``.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

import attrs

from ..canonical import canonical_json
from ._errors import AuditKeyError

KEY_NAME: Final = "audit-key"
KEY_ENV: Final = "SCONNECT_AUDIT_KEY_FILE"
KEY_BYTES: Final = 32
CHECKPOINT_LOG_NAME: Final = "audit-checkpoints.log"
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


def key_path(state_dir: Path, key_file: str | os.PathLike[str] | None = None) -> Path:
    """Where the key lives: ``key_file``, else ``$SCONNECT_AUDIT_KEY_FILE``, else
    ``<state>/audit-key``."""
    if key_file is not None:
        return Path(key_file)
    env = os.environ.get(KEY_ENV)
    return Path(env) if env else state_dir / KEY_NAME


def read_key(path: Path) -> bytes:
    """The key's bytes. Raises :class:`AuditKeyError` (missing, unreadable, wrong size)."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(f"audit key {path} is missing") from None
    except OSError as exc:
        raise AuditKeyError(f"audit key {path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise AuditKeyError(f"audit key {path} must hold exactly {KEY_BYTES} bytes, not {len(key)}")
    return key


def load_or_create_key(path: Path, *, may_create: bool) -> bytes:
    """The writer's key: read it, or create it (32 random bytes, 0600, O_EXCL so that
    two starting processes never each write their own) when ``may_create``.

    The writer refuses a key that others may read or write: whoever can read it can
    forge checkpoints. It refuses to create a key when checkpoints already exist
    (``may_create`` False): a new key would silently orphan every old checkpoint, so
    the operator restores the old one (or points ``SCONNECT_AUDIT_KEY_FILE`` at it).
    """
    if not path.exists():
        if not may_create:
            raise AuditKeyError(
                f"audit key {path} is missing but the audit log has checkpoints signed with it; "
                f"restore the key (or set {KEY_ENV} to its path) — a new key would orphan them"
            )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it meanwhile: use theirs
        else:
            try:
                os.write(fd, secrets.token_bytes(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
    mode = path.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise AuditKeyError(
            f"audit key {path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
            f"chmod 600 it — whoever can read it can forge checkpoints"
        )
    return read_key(path)


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
