"""What a grant reaches: exactly the approved arguments, or the constraints a person confirmed.

A grant made without ``match`` covers the tool with exactly the approved arguments
(their keyed digest). With ``match``, it covers the tool with any arguments that keep
what each named argument says, and leaves the others free:

- ``same``: the argument holds the same JSON value as in the approved action (compared
  by keyed digest, so a secret argument is pinned without being stored);
- ``program``: the argument is a command line of plain words (letters, digits and
  ``_ . / : = @ % + , -``, separated by spaces) whose first word is the approved one.
  A command line with anything else (quotes, ``;``, ``|``, ``$``, redirections, globs,
  a newline...) is never covered, whatever its first word: a shell would not read it
  as "that program with some arguments".

Constraints are built only from the approved action's own values: a person chooses
which arguments to pin, never what they are pinned to, so a grant is never wider than
what they saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

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
        if kind == "same":
            shown = "[redacted]" if argument in secret else value
            constraints.append({"argument": argument, "kind": "same", "digest": value_digest(digest, argument, value),
                                "value": shown})
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
        if kind == "same":
            if value_digest(digest, argument, value) != constraint.get("digest"):
                return False
        elif kind == "program":
            program = program_of(value)
            if program is None or program != constraint.get("program"):
                return False
        else:
            return False
    return True


def shown_match(constraints: tuple[dict[str, Any], ...] | None) -> dict[str, str] | None:
    """The ``match`` as a person wrote it (argument -> kind), for listings."""
    if constraints is None:
        return None
    return {str(c.get("argument")): str(c.get("kind")) for c in constraints}
