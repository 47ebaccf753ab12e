"""What a grant reaches: exactly the approved arguments, or the constraints a person confirmed.

A grant made without ``match`` covers the tool with exactly the approved arguments.
With ``match``, it covers the tool with any arguments that keep what each named argument
says, and leaves the others free:

- ``same``: the argument holds the same JSON value as in the approved action;
- ``program``: the argument is a command line of plain words (letters, digits and
  ``_ . / : = @ % + , -``, separated by spaces) whose first word is the approved one.
  A command line with anything else (quotes, ``;``, ``|``, ``$``, redirections, globs,
  a newline...) is never covered, whatever its first word: a shell would not read it
  as "that program with some arguments".

Constraints are built only from the approved action's own values: a person chooses
which arguments to pin, never what they are pinned to, so a grant is never wider than
what they saw.

Comparing: values are compared as canonical JSON (``1`` is not ``1.0`` nor ``true``),
so a grant means the same on every instance sharing a database. A tool's secret
arguments are never kept in the clear: they are compared by a keyed digest under the
audit key, which every instance on one database shares, so such a grant covers calls on
each of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..audit import redact
from ..canonical import canonical_json

MATCH_KINDS: Final = ("same", "program")
#: At most this many arguments named in one ``match``.
MAX_MATCHED: Final = 32
_PLAIN: Final = re.compile(r"[A-Za-z0-9_./:=@%+,\- ]+")

Digest = Callable[[Any], str]


def program_of(command: Any) -> str | None:
    """The program of a plain command line (its first word), None when it is not one."""
    if not isinstance(command, str) or len(command) > 65536 or not _PLAIN.fullmatch(command):
        return None
    words = command.split()
    return words[0] if words else None


def value_digest(digest: Digest, argument: str, value: Any) -> str:
    return digest({"argument": argument, "value": value})


def build(match: Mapping[str, str], arguments: Mapping[str, Any], digest: Digest,
          secret: frozenset[str]) -> tuple[dict[str, Any], ...]:
    """The constraints for ``match`` over the approved ``arguments``; ValueError (with the
    argument's name first) for a match that names no such argument or cannot apply."""
    constraints = []
    for argument, kind in sorted(match.items()):
        if argument not in arguments:
            raise ValueError(f"{argument}: the approved action has no argument {argument!r}")
        value = arguments[argument]
        if kind == "same" and argument in secret:
            constraints.append({"argument": argument, "kind": "same", "secret": True,
                                "digest": value_digest(digest, argument, value)})
        elif kind == "same":
            constraints.append({"argument": argument, "kind": "same", "value": canonical_json(value)})
        elif kind == "program":
            if argument in secret:
                raise ValueError(f"{argument}: a secret argument can only be matched with 'same'")
            program = program_of(value)
            if program is None:
                raise ValueError(f"{argument}: not a plain command line (only letters, digits, spaces and "
                                 "_ . / : = @ % + , - are), so only 'same' can pin it")
            constraints.append({"argument": argument, "kind": "program", "program": program})
        else:
            raise ValueError(f"{argument}: {kind!r} is not one of {', '.join(MATCH_KINDS)}")
    return tuple(constraints)


def satisfies(constraints: tuple[dict[str, Any], ...], arguments: Mapping[str, Any], digest: Digest) -> bool:
    """Whether ``arguments`` keep every constraint (an unknown constraint kind never holds)."""
    for constraint in constraints:
        argument = constraint.get("argument")
        if not isinstance(argument, str) or argument not in arguments:
            return False
        value = arguments[argument]
        kind = constraint.get("kind")
        if kind == "same" and constraint.get("secret") is True:
            if value_digest(digest, argument, value) != constraint.get("digest"):
                return False
        elif kind == "same":
            if canonical_json(value) != constraint.get("value"):
                return False
        elif kind == "program":
            program = program_of(value)
            if program is None or program != constraint.get("program"):
                return False
        else:
            return False
    return True


def exactly(stored: Mapping[str, Any], stored_digest: str, arguments: Mapping[str, Any], secret: frozenset[str],
            digest: Digest) -> bool:
    """Whether ``arguments`` are exactly the approved ones: the same canonical JSON with the
    tool's secret arguments redacted (as ``stored`` keeps them), and, when the call holds a
    secret argument, the same keyed digest of the whole (``stored_digest``)."""
    if canonical_json(redact(dict(arguments), secret)) != canonical_json(dict(stored)):
        return False
    return not (secret & arguments.keys()) or digest(dict(arguments)) == stored_digest


def shown_match(constraints: tuple[dict[str, Any], ...] | None) -> dict[str, str] | None:
    """The ``match`` as a person wrote it (argument -> kind), for listings."""
    if constraints is None:
        return None
    return {str(c.get("argument")): str(c.get("kind")) for c in constraints}
