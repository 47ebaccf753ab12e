"""One cattrs converter that refuses instead of coercing, for config files and wire frames.

cattrs' defaults coerce: ``str(5) == "5"``, ``bool("false") is True``, and ``True`` passes
as the integer 1. Configuration and protocol frames both need the opposite: a value of the
wrong type is an error, worded by the caller (a config problem reads differently from a
frame error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cattrs

__all__ = ["strict_converter"]

#: ``refuse(value, expected)``: the exception for ``value`` where ``expected`` (str, int,
#: bool or float, float meaning any JSON number) was required.
Refusal = Callable[[Any, type], Exception]


def strict_converter(refuse: Refusal) -> cattrs.Converter:
    """A converter whose str, int, bool and float take exactly those types (bool is never a
    number), with unknown keys refused; ``refuse`` words each failure."""
    conv = cattrs.Converter(forbid_extra_keys=True)

    def exact(expected: type) -> Callable[[Any, type], Any]:
        def hook(value: Any, _: type) -> Any:
            if type(value) is not expected:
                raise refuse(value, expected)
            return value

        return hook

    def number(value: Any, _: type) -> float:
        if type(value) not in (int, float):
            raise refuse(value, float)
        return float(value)

    for kind in (str, int, bool):
        conv.register_structure_hook(kind, exact(kind))
    conv.register_structure_hook(float, number)
    return conv
