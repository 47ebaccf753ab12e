"""What the audit log stores: the event a caller hands in, and the record it becomes.

An :class:`AuditEvent` is what happened (who, what, to what, how it was decided, how it
ended). :meth:`AuditLog.record <engine.audit.AuditLog.record>` snapshots it at once into
a :class:`Prepared` value (canonical JSON text, secrets redacted, the digest of the
unredacted arguments) so that a caller mutating its dicts afterwards changes nothing and
a value JSON cannot hold fails in the caller, not in the writer. The writer then gives
it a sequence number and the previous record's hash, which makes it an
:class:`AuditRecord`. Both are :class:`RecordFacts` (the stored fields, declared once);
the record adds only its place in the chain (``seq``, ``version``, ``prev_hash``, ``hash``).

The hash: ``sha256`` of the canonical JSON (``engine.canonical``) of the record as a
JSON object holding every field except ``hash`` itself — see :meth:`AuditRecord.body`.
The first record's ``prev_hash`` is :data:`GENESIS_HASH`. Any change to any field of any
record, to its position (``seq`` is hashed) or to its predecessor (``prev_hash`` is
hashed) changes a hash that the next record, or a checkpoint, still remembers.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import time as _time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Final

import attrs

from ..canonical import canonical_json, digest, keyed_text_digest

__all__ = [
    "DECIDED_BY",
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "KINDS",
    "REDACTED",
    "AuditEvent",
    "AuditRecord",
    "Prepared",
    "RecordFacts",
    "iso_time",
    "redact",
    "scrub",
    "secret_values",
]

#: The record format; hashed with every record so that a later format can change fields
#: without making old records unverifiable.
FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
REDACTED: Final = "[redacted]"
KINDS: Final = frozenset(
    {"auth_failure", "decision", "approval", "execution", "resource_read", "config_reload", "grant", "feedback",
     "memory", "egress"}
)
DECIDED_BY: Final = frozenset({"rule", "person"})
#: ``details`` is for small context (an error message, a reason), not for payloads.
MAX_DETAILS_BYTES: Final = 16 * 1024

_WORD = re.compile(r"[a-z][a-z0-9_]*")
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")


def iso_time(epoch_s: float) -> str:
    """The canonical ISO form of a UTC epoch: ``2025-01-31T12:00:00.123456Z``."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    if moment.year < 1000:  # strftime writes such a year unpadded; isoformat would pad it
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as that strftime, for a third of its cost (made for every record).
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def redact(arguments: Mapping[str, Any], secret: Iterable[str]) -> dict[str, Any]:
    """A copy of ``arguments`` with each top-level field named in ``secret`` replaced by
    :data:`REDACTED`. Top level only, matching how tools declare ``secret_arguments``
    (names of their parameters)."""
    hidden = frozenset(secret)
    return {key: REDACTED if key in hidden else value for key, value in arguments.items()}


def secret_values(arguments: Mapping[str, Any], secret: Iterable[str]) -> list[str]:
    """The texts of ``arguments``' secret fields as they could show up elsewhere (a
    validation error quoting a value, a tool echoing it): strings as they are, other
    values as their JSON. Empty ones are left out (they hide nothing)."""
    found = []
    for name in frozenset(secret):
        if name in arguments:
            value = arguments[name]
            text = value if isinstance(value, str) else canonical_json(value)
            if text:
                found.append(text)
    return sorted(found, key=len, reverse=True)  # a longer secret first, when one holds another


_PLAIN_SCALARS: Final = frozenset({int, float, bool})


def scrub(value: Any, hide: Iterable[str]) -> Any:
    """A copy of a JSON value whose strings have every text in ``hide`` replaced by
    :data:`REDACTED` (keys included)."""
    needles = [h for h in hide if h]
    if not needles:
        return value

    def clean(item: Any) -> Any:
        if item is None or type(item) in _PLAIN_SCALARS:
            return item  # the common case, without the ABC check below
        if isinstance(item, str):
            for needle in needles:
                item = item.replace(needle, REDACTED)
            return item
        if isinstance(item, Mapping):
            return {clean(k): clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item

    return clean(value)


# Text fields must really be str: SQLite's TEXT affinity would store 5 as '5', and the
# hash recomputed from the stored row would then differ from the one sealed in memory.
# (One plain function per field, not attrs' optional(instance_of(str)): two calls less
# for each of the event's fields, and every tool call makes two events.)
def _optional_str(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string or None, not {type(value).__name__}")


def _utf8(text: str) -> None:
    """Refuse a string canonical JSON cannot hold (a lone surrogate), as canonical_json does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("value contains a string that is not valid Unicode") from None


def _string_items(value: Any) -> list[str]:
    # A bare string would become its characters: refuse it, and non-string items.
    if isinstance(value, str | bytes):
        raise TypeError(f"expected a collection of strings, not {value!r}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"expected a collection of strings, not {value!r}")
    return items


def _string_set(value: Any) -> frozenset[str]:
    return frozenset(_string_items(value))


def _string_tuple(value: Any) -> tuple[str, ...]:
    return tuple(_string_items(value))


def _check_kind(_: Any, __: Any, value: str) -> None:
    if value not in KINDS:
        raise ValueError(f"audit kind must be one of {sorted(KINDS)}, not {value!r}")


def _check_word(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    _optional_str(instance, attribute, value)
    if value is not None and not _WORD.fullmatch(value):
        raise ValueError(f"{attribute.name} must be a lower-case word like 'ok' or 'deny', not {value!r}")


def _check_action(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    _optional_str(instance, attribute, value)
    if value is not None and not _ACTION.fullmatch(value):
        raise ValueError(f"action must look like 'tool.call' or 'resource.read', not {value!r}")


def _check_decided_by(_: Any, __: Any, value: str | None) -> None:
    if value is not None and value not in DECIDED_BY:
        raise ValueError(f"decided_by must be 'rule' or 'person', not {value!r}")


def _check_duration(_: Any, __: Any, value: float | None) -> None:
    # Finite too: canonical JSON has no infinity, and the record must fail here, not in the writer.
    if value is not None and (isinstance(value, bool) or not 0 <= value < math.inf):
        raise ValueError(f"duration_ms must be a finite number >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class AuditEvent:
    """One thing to audit. Only ``kind`` is required; leave out what does not apply.

    - ``kind``: one of :data:`KINDS`.
    - ``subject`` (JWT ``sub``; for an auth failure whatever the token claimed, if
      anything), ``session_id``, ``agent``.
    - ``action`` (``tool.call``, ``resource.read``, ...) and ``target`` (tool name or URI).
    - ``arguments`` and ``secret``: the top-level argument names to store as
      ``"[redacted]"`` (the tool's ``secret_arguments``). ``arguments_digest`` is always
      the keyed digest (HMAC under a key derived from the audit key) of the unredacted
      arguments, so the record still proves *what* ran to whoever holds the key, and
      tells nothing about a secret to anyone else.
    - ``effect`` and ``rule_ids``: the policy decision (stored as ``decision``).
    - ``decided_by`` (``rule`` or ``person``) and ``approver`` (the person's ``sub``).
    - ``outcome`` (``ok``, ``error``, ``denied``, ``timeout``, ``cancelled``,
      ``limit_exceeded``, ``approved``, ``expired``, ...: a lower-case word),
      ``duration_ms``, ``policy_revision`` (hash of the policy files), ``details``
      (a small JSON object).
    """

    kind: str = attrs.field(validator=_check_kind)
    subject: str | None = attrs.field(default=None, validator=_optional_str)
    session_id: str | None = attrs.field(default=None, validator=_optional_str)
    agent: str | None = attrs.field(default=None, validator=_optional_str)
    action: str | None = attrs.field(default=None, validator=_check_action)
    target: str | None = attrs.field(default=None, validator=_optional_str)
    arguments: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    secret: frozenset[str] = attrs.field(default=frozenset(), converter=_string_set)
    effect: str | None = attrs.field(default=None, validator=_check_word)
    rule_ids: tuple[str, ...] = attrs.field(default=(), converter=_string_tuple)
    decided_by: str | None = attrs.field(default=None, validator=_check_decided_by)
    approver: str | None = attrs.field(default=None, validator=_optional_str)
    outcome: str | None = attrs.field(default=None, validator=_check_word)
    duration_ms: float | None = attrs.field(default=None, validator=_check_duration)
    policy_revision: str | None = attrs.field(default=None, validator=_optional_str)
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def __attrs_post_init__(self) -> None:
        if self.decided_by == "person" and not self.approver:
            raise ValueError("decided_by='person' needs the approver's sub")

    def prepare(self, now: float | None = None, *, digest_key: bytes) -> Prepared:
        """Snapshot this event as immutable canonical text, timestamped ``now`` (default:
        the current time); ``digest_key`` keys the digest of the unredacted arguments (a
        plain hash of a short secret would be reversed by trying candidates). Raises
        ``ValueError``/``TypeError`` for arguments or details
        JSON cannot hold, or details larger than :data:`MAX_DETAILS_BYTES`."""
        given, context = self.arguments, self.details
        # type() first: the Mapping ABC's isinstance is slow, and these are dicts nearly always.
        if given is not None and type(given) is not dict and not isinstance(given, Mapping):
            raise TypeError("arguments must be a JSON object (a mapping)")
        if type(context) is not dict and not isinstance(context, Mapping):
            raise TypeError("details must be a JSON object (a mapping)")
        # Every text field must survive canonical JSON (no lone surrogates): checked here,
        # in the caller, so that a bad value never reaches the writer's batch. Joined, they
        # are checked at once: UTF-8 refuses every surrogate, paired or not.
        texts = [text for text in (self.subject, self.session_id, self.agent, self.target, self.approver,
                                   self.policy_revision) if text is not None]
        _utf8("".join((*texts, *self.rule_ids)))
        at = round(_time.time() if now is None else now, 6)
        arguments = digest_of = None
        hide: list[str] = []
        if given is not None:
            plain = dict(given)
            text = canonical_json(plain)
            digest_of = keyed_text_digest(digest_key, text)
            if self.secret.isdisjoint(plain):
                arguments = text  # nothing to hide: the stored form is the digested text itself
            else:
                arguments = canonical_json(redact(plain, self.secret))
                # A secret can also hide in details (a validation error quoting the value): scrubbed.
                hide = secret_values(plain, self.secret)
        details = canonical_json(scrub(context if type(context) is dict else dict(context), hide))
        # UTF-8 takes at most 4 bytes a character: most details need no encoding to be measured.
        if len(details) * 4 > MAX_DETAILS_BYTES and len(details.encode("utf-8")) > MAX_DETAILS_BYTES:
            raise ValueError(f"details must stay under {MAX_DETAILS_BYTES} bytes of JSON")
        decision = None
        if self.effect is not None or self.rule_ids:
            # canonical_json({"effect": ..., "rule_ids": [...]}), written out: its keys in
            # order, its strings checked above.
            decision = (f'{{"effect":{"null" if self.effect is None else _text(self.effect)},'
                        f'"rule_ids":[{",".join(map(_text, self.rule_ids))}]}}')
        return Prepared(
            time=at, time_iso=iso_time(at), kind=self.kind, subject=self.subject,
            session_id=self.session_id, agent=self.agent, action=self.action, target=self.target,
            arguments=arguments, arguments_digest=digest_of, decision=decision,
            decided_by=self.decided_by, approver=self.approver, outcome=self.outcome,
            duration_ms=None if self.duration_ms is None else round(float(self.duration_ms), 3),
            policy_revision=self.policy_revision, details=details,
        )


@attrs.frozen(kw_only=True)
class RecordFacts:
    """What one record says happened, as stored: the fields a :class:`Prepared` event and
    its :class:`AuditRecord` share (declared once, here). JSON-valued fields are canonical
    text; ``time`` and ``duration_ms`` are floats because SQLite's REAL gives floats back,
    and the hash must come out the same when verify recomputes it from the stored row."""

    time: float
    time_iso: str
    kind: str
    subject: str | None
    session_id: str | None
    agent: str | None
    action: str | None
    target: str | None
    arguments: str | None
    arguments_digest: str | None
    decision: str | None
    decided_by: str | None
    approver: str | None
    outcome: str | None
    duration_ms: float | None
    policy_revision: str | None
    details: str


@attrs.frozen(kw_only=True)
class Prepared(RecordFacts):
    """An event frozen for the writer: its :class:`RecordFacts`, not yet in the chain."""

    def seal(self, seq: int, prev_hash: str) -> AuditRecord:
        """The record at ``seq`` following a record whose hash is ``prev_hash``: the one
        place an :class:`AuditRecord` is made from an event (the facts are carried as they are)."""
        fields = dict(zip(_FACTS, _facts_of(self), strict=True))
        columns = {**fields, "version": FORMAT_VERSION, "seq": seq, "prev_hash": prev_hash}
        text = _body_text(columns).encode("utf-8")
        return AuditRecord(version=FORMAT_VERSION, seq=seq, prev_hash=prev_hash,
                           hash=hashlib.sha256(text).hexdigest(), **fields)


# The stored columns, in table order; JSON-valued ones are canonical text in the table.
COLUMNS: Final = (
    "seq", "version", "time", "time_iso", "kind", "subject", "session_id", "agent", "action",
    "target", "arguments", "arguments_digest", "decision", "decided_by", "approver", "outcome",
    "duration_ms", "policy_revision", "details", "prev_hash", "hash",
)
_JSON_COLUMNS: Final = frozenset({"arguments", "decision", "details"})
#: The fields a Prepared event carries into its record.
_FACTS: Final = tuple(field.name for field in attrs.fields(RecordFacts))
_facts_of: Final = operator.attrgetter(*_FACTS)


#: The hashed body's keys in canonical (sorted) order.
_BODY_KEYS: Final = tuple(sorted(name for name in COLUMNS if name != "hash"))
_text: Final = encode_basestring  # a JSON string, exactly as canonical_json writes it
#: The hashed body with a ``%s`` for each value's JSON (no key needs escaping).
_BODY_TEMPLATE: Final = "{" + ",".join(f'"{name}":%s' for name in _BODY_KEYS) + "}"


def _scalar(value: Any) -> str:
    """The canonical JSON of a column that is not JSON text (json.dumps with allow_nan=False)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _text(value)
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not allowed in canonical JSON")
        return float.__repr__(value)
    return canonical_json(value)


def _body_text(columns: Mapping[str, Any]) -> str:
    """``canonical_json(_body(**columns))``, spliced: the JSON columns are canonical text
    already (made by :meth:`AuditEvent.prepare`), so they are not parsed and written
    again. Only for a record being sealed: verify recomputes from the stored row through
    :func:`_body`, which does not trust that the stored text is canonical."""
    return _BODY_TEMPLATE % tuple(
        (value if value is not None else "null") if name in _JSON_COLUMNS
        else _text(value) if type(value) is str else _scalar(value)
        for name in _BODY_KEYS for value in (columns[name],)
    )


def _body(**columns: Any) -> dict[str, Any]:
    """The hashed JSON object: every column but ``hash``, JSON columns as values."""
    return {
        name: (json.loads(value) if name in _JSON_COLUMNS and value is not None else value)
        for name, value in columns.items()
        if name != "hash"
    }


_row_of: Final = operator.attrgetter(*COLUMNS)


@attrs.frozen(kw_only=True)
class AuditRecord(RecordFacts):
    """One committed record: its :class:`RecordFacts` and its place in the chain.
    JSON-valued fields (``arguments``, ``decision``, ``details``) are kept as their
    canonical text, exactly as stored and hashed; use :meth:`to_dict` for values."""

    seq: int
    version: int
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Iterable[Any]) -> AuditRecord:
        return cls(**dict(zip(COLUMNS, row, strict=True)))

    def row(self) -> tuple[Any, ...]:
        return _row_of(self)  # type: ignore[no-any-return]

    def body(self) -> dict[str, Any]:
        """The JSON object whose canonical form is hashed (every field but ``hash``)."""
        return _body(**{name: getattr(self, name) for name in COLUMNS})

    def computed_hash(self) -> str:
        """The hash this record's content calls for (compare with :attr:`hash`)."""
        return digest(self.body())

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-valued ones decoded: what ``--json`` prints."""
        return {**self.body(), "hash": self.hash}
