"""Record a payment in the workspace ledger — the shipped example of a level-3 tool.

No money moves. ``send`` validates the payment and appends one JSON line to
``payments.jsonl`` in the workspace (the current directory), a real, append-only
ledger that an operator can inspect; it stands in for a payment API so that the
"system restricted" path (policy must name the tool and the caller) can be tried
end to end without a bank.

``send(recipient, amount, currency="EUR", memo="")`` returns::

    {"payment_id": "pay_3f2a...", "recipient": "ACME GmbH", "amount": 120.5,
     "currency": "EUR", "memo": "", "status": "recorded",
     "recorded_at": "2025-03-01T13:05:09Z", "ledger": "payments.jsonl"}

and the ledger line holds the same fields except ``ledger``.

Rules: ``recipient`` non-empty (surrounding whitespace removed, at most 200
characters, no control characters); ``amount`` a number greater than 0 and at most
10000 with at most two decimal places; ``currency`` three letters (upper-cased, e.g.
``eur`` becomes ``EUR``); ``memo`` at most 500 characters, no control characters other
than newline and tab.

Error handling: a rule broken raises ``ValueError`` naming it, and nothing is written.
A ledger that is a symbolic link, a hard link or not a regular file is refused with
``PermissionError`` (the line could otherwise land outside the workspace). The line is
written with one ``write`` under an exclusive ``flock`` and then ``fsync``ed, so
concurrent calls never interleave and a returned payment is on disk.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import math
import os
import re
import stat
import uuid

__all__ = ["send"]

LEDGER = "payments.jsonl"
MAX_AMOUNT = 10_000
MAX_RECIPIENT_CHARS = 200
MAX_MEMO_CHARS = 500

_CURRENCY = re.compile(r"[A-Z]{3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_NEWLINE_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def send(recipient: str, amount: float, currency: str = "EUR", memo: str = "") -> dict[str, object]:
    """Record a payment of ``amount`` ``currency`` to ``recipient`` in the ledger."""
    recipient = _recipient(recipient)
    amount = _amount(amount)
    currency = _currency(currency)
    memo = _memo(memo)
    record: dict[str, object] = {
        "payment_id": f"pay_{uuid.uuid4().hex}",
        "recipient": recipient,
        "amount": amount,
        "currency": currency,
        "memo": memo,
        "status": "recorded",
        "recorded_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    _append(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return {**record, "ledger": LEDGER}


def _recipient(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("recipient must be a non-empty name or account")
    value = value.strip()
    if len(value) > MAX_RECIPIENT_CHARS:
        raise ValueError(f"recipient is longer than {MAX_RECIPIENT_CHARS} characters")
    if _CONTROL.search(value):
        raise ValueError("recipient must not contain control characters")
    return value


def _amount(value: object) -> float | int:
    # bool is an int subclass: `true` is not an amount.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("amount must be a number, e.g. 12.50")
    if not math.isfinite(value):
        raise ValueError("amount must be a finite number")
    if value <= 0:
        raise ValueError("amount must be greater than 0")
    if value > MAX_AMOUNT:
        raise ValueError(f"amount must be at most {MAX_AMOUNT}")
    if round(value, 2) != value:
        raise ValueError("amount must have at most two decimal places")
    return value


def _currency(value: object) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value.strip().upper()):
        raise ValueError(f"currency must be a three-letter code such as EUR or USD, not {value!r}")
    return value.strip().upper()


def _memo(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("memo must be a string")
    if len(value) > MAX_MEMO_CHARS:
        raise ValueError(f"memo is longer than {MAX_MEMO_CHARS} characters")
    if _CONTROL_EXCEPT_NEWLINE_TAB.search(value):
        raise ValueError("memo must not contain control characters other than newline and tab")
    return value


def _append(line: str) -> None:
    data = line.encode("utf-8")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(LEDGER, flags, 0o600)  # the ledger holds memos: its owner's eyes only
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise PermissionError(f"{LEDGER} is not a regular file in the workspace") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            raise PermissionError(f"{LEDGER} is not a regular, singly linked file; not writing")
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
