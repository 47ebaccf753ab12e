"""The tools the engine carries out itself, as configuration sees them: their parameters.

A tools.d/ file declares one with ``builtin: NAME`` and a ``permission_level``, and is then
listed, decided, approved and audited like any tool; only its execution differs (it runs
in the engine, not in a sandbox: engine/memory/tools.py).  Its parameters are fixed here,
so that the runtime can rely on them; the loader fills them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

BUILTIN_PARAMETERS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType({
    "remember": {
        "type": "object",
        "properties": {
            "fact": {
                "type": "string", "minLength": 1, "maxLength": 4096,
                "description": "One short fact about the user worth knowing in later conversations, "
                               "as a full sentence (e.g. 'Prefers answers in French.').",
            },
        },
        "required": ["fact"],
        "additionalProperties": False,
    },
    "forget": {
        "type": "object",
        "properties": {
            "memory_id": {"type": "string", "minLength": 1, "maxLength": 128,
                          "description": "The id of a memory, as listed with the memories."},
        },
        "required": ["memory_id"],
        "additionalProperties": False,
    },
})
