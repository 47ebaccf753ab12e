"""Canonical JSON and its digest: one byte-exact form for "the same value".

Used wherever a value must be compared or signed across time and processes: the audit
log's hash chain, and (keyed, since arguments may hold secrets) the digest of an
action's arguments in the audit log and in the pending actions.

The form: ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)``, encoded as UTF-8 for hashing. Close to, but not
the same as, RFC 8785 (JCS): keys sort by code point rather than UTF-16 code unit (they
differ only for keys with characters beyond U+FFFF) and floats use Python's repr.
A verifier in another language must reproduce these two choices.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Final

__all__ = ["KEYED_PREFIX", "canonical_json", "digest", "keyed_digest", "keyed_text_digest"]

#: What a keyed digest starts with, so that it is never mistaken for a plain one.
KEYED_PREFIX: Final = "hmac-sha256:"
# json.dumps(value, sort_keys=True, ...) builds this encoder on every call: built once.
_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode: Final = _ENCODER.encode


def _encode_with_c(value: Any) -> str:
    """``_encode(value)`` without its Python layers (``encode`` and ``iterencode``): the
    C encoder ``iterencode`` would make, called directly; a fresh ``markers`` dict each
    time, as there (a shared one would keep stale entries after an error)."""
    return "".join(_c_make_encoder({}, _ENCODER.default, encode_basestring, None, ":", ",", True, False, False)(
        value, 0))


# The C accelerator is CPython's; without it (another interpreter) the encoder's own path.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_fast: Final = _encode_with_c if _c_make_encoder is not None else _encode


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``.

    Raises ``ValueError`` for NaN/Infinity and for strings that cannot be UTF-8 (lone
    surrogates), ``TypeError`` for values JSON cannot hold. Tuples become arrays.
    """
    text = _fast(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("value contains a string that is not valid Unicode") from None
    return text


def digest(value: Any) -> str:
    """SHA-256 (lower-case hex) of the UTF-8 canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def keyed_digest(key: bytes, value: Any) -> str:
    """``hmac-sha256:`` + HMAC-SHA256 (lower-case hex) of the UTF-8 canonical JSON of
    ``value`` under ``key``.

    For values that may hold secrets (a tool's secret arguments): a plain digest of a
    short secret (a PIN) is reversed by trying every candidate; without the key, trying
    candidates proves nothing.
    """
    return keyed_text_digest(key, canonical_json(value))


def keyed_text_digest(key: bytes, text: str) -> str:
    """:func:`keyed_digest` of the value whose canonical JSON is ``text`` (already made).

    From a copy of an HMAC keyed once per key: ``hmac.digest`` lets the interpreter lock
    go around every digest, however short, and on the event loop each such release can
    hand the lock to another thread (the audit writer) and wait to get it back."""
    if len(key) < 32:
        raise ValueError("a digest key must hold at least 32 bytes")
    keyed = _keyed.get(key)
    if keyed is None:
        if len(_keyed) >= _KEYED_MAX:
            _keyed.clear()
        keyed = _keyed[key] = hmac.new(key, digestmod=hashlib.sha256)
    mac = keyed.copy()
    mac.update(text.encode("utf-8"))
    return KEYED_PREFIX + mac.hexdigest()


# HMACs keyed and never fed, by key: copied for each digest (a process has one or two keys).
_keyed: dict[bytes, hmac.HMAC] = {}
_KEYED_MAX = 16
