"""Canonical JSON and its digest: one byte-exact form for "the same value".

Used wherever a value must be compared or signed across time and processes: the digest
of a pending action's arguments (what is approved is exactly what runs), and the audit
log's hash chain.

The form: ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)``, encoded as UTF-8 for hashing. Close to, but not
the same as, RFC 8785 (JCS): keys sort by code point rather than UTF-16 code unit (they
differ only for keys with characters beyond U+FFFF) and floats use Python's repr.
A verifier in another language must reproduce these two choices.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "digest"]


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``.

    Raises ``ValueError`` for NaN/Infinity and for strings that cannot be UTF-8 (lone
    surrogates), ``TypeError`` for values JSON cannot hold. Tuples become arrays.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("value contains a string that is not valid Unicode") from None
    return text


def digest(value: Any) -> str:
    """SHA-256 (lower-case hex) of the UTF-8 canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
