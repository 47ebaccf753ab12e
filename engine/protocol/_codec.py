"""Turning wire text into frames and frames into wire text. No I/O.

Decoding a client frame, in order (each step's failure is one :class:`ProtocolError`):

1. bytes → UTF-8 text, text → JSON (``bad_json``: not UTF-8, syntax, NaN/Infinity,
   duplicate keys, lone surrogate escapes, nesting too deep);
2. a JSON object (``invalid_message``, path ``$``) holding at most :data:`MAX_CONTAINERS`
   arrays and objects (``too_large``, checked before parsing) nested at most
   :data:`MAX_DEPTH` deep (``too_large``);
3. ``type`` present and a string (``invalid_message``), a known type (``unknown_type``),
   one a client may send (``invalid_message`` for server-only types);
4. the whole frame validated against its type's schema, once (``invalid_message``,
   ``details["path"]`` = JSON path of the offending field);
5. structured by this module's private cattrs converter into a frozen attrs class.

Every error carries ``reply_to`` = the frame's ``id`` when it had a valid string id.

Encoding unstructures with the same converter and does not validate at run time (the
test-suite checks every server frame class against the schema, so validating again per
frame would only spend the ~60 µs per-frame budget twice).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from ..strict import strict_converter
from . import _messages as m
from ._errors import ErrorCode, ProtocolError
from ._fastcheck import compile_check
from ._schema import definitions, explain, type_defs, validator_for

__all__ = ["decode", "decode_server", "encode", "error_frame"]


# --- the converter ---------------------------------------------------------------------


_WORDS = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}


def _refuse(value: Any, expected: type) -> Exception:
    return TypeError(f"expected {_WORDS[expected]}, got {type(value).__name__}")


def _structure_enum(value: Any, cl: type[enum.Enum]) -> Any:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return cl(value)


def _make_converter() -> cattrs.Converter:
    conv = strict_converter(_refuse)
    # StrEnums are str subclasses and would otherwise hit the str hook above and stay
    # plain strings; give each protocol enum its own hook.
    for enum_cls in (ErrorCode, m.LifecycleState, m.AgentCommand, m.ActionKind, m.Approver,
                     m.Executor, m.ResultStatus, m.RememberScope):
        conv.register_structure_hook(enum_cls, _structure_enum)
    return conv


_conv = _make_converter()


def _omit_overrides(cls: type) -> dict[str, Any]:
    return {
        a.name: override(omit_if_default=True)
        for a in attrs.fields(cls)
        if a.metadata.get(m.OMIT_IF_NONE)
    }


for _item in (m.ToolInfo, m.OfferedTool, m.ResourceInfo, m.PendingActionInfo, m.Remember, m.GrantRef, m.GrantInfo):
    _conv.register_unstructure_hook(
        _item, make_dict_unstructure_fn(_item, _conv, **_omit_overrides(_item))
    )


def _register_frame(cls: type) -> None:
    """Hooks mapping the flat class to and from ``{"type", "id", "payload"}``."""
    payload_struct: Callable[[Any, type], Any] = make_dict_structure_fn(cls, _conv)
    payload_unstruct: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(
        cls, _conv, id=override(omit=True), **_omit_overrides(cls)
    )
    msg_type = cls.TYPE  # type: ignore[attr-defined]

    def structure(obj: dict[str, Any], _cl: type) -> Any:
        # No payload field is called "id" (checked below), so the merge cannot clash.
        fields = dict(obj["payload"])
        fields["id"] = obj["id"]
        return payload_struct(fields, cls)

    def unstructure(frame: Any) -> dict[str, Any]:
        return {"type": msg_type, "id": frame.id, "payload": payload_unstruct(frame)}

    _conv.register_structure_hook(cls, structure)
    _conv.register_unstructure_hook(cls, unstructure)


def _tag(cls: type) -> str:
    return cls.TYPE  # type: ignore[attr-defined,no-any-return]


for _union in (m.ClientFrame, m.ServerFrame):
    for _cls in _union.__args__:
        _register_frame(_cls)
    # The tag is the wire "type"; the union hook pops it before the class hook runs.
    configure_tagged_union(_union, _conv, tag_generator=_tag, tag_name="type")


# --- per-direction dispatch tables -----------------------------------------------------


@attrs.frozen
class _Kind:
    cls: type
    check: Callable[[Any], bool]  # fast yes/no, compiled once (see _fastcheck)
    validator: Any  # jsonschema validator, compiled once: the authority on refusals


def _table(union: Any, direction: str) -> dict[str, _Kind]:
    defs = type_defs(direction)
    classes = {_tag(c): c for c in union.__args__}
    if set(classes) != set(defs):  # the classes and schema.json must agree
        raise RuntimeError(
            f"{direction} frames: classes {sorted(classes)} != schema {sorted(defs)}"
        )
    for c in classes.values():
        assert "id" not in {a.name for a in attrs.fields(c)[1:]}
    all_defs = definitions()
    return {
        t: _Kind(classes[t], compile_check(all_defs[defs[t]], all_defs), validator_for(defs[t]))
        for t in sorted(defs)
    }


_CLIENT = _table(m.ClientFrame, "client")
_SERVER = _table(m.ServerFrame, "server")


# --- decoding --------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate keys are legal JSON but parsers disagree on which one wins; an approval
    # {"approved": false, "approved": true} must not mean different things to a proxy
    # and to us.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(f"duplicate key {json.dumps(dup[:64])}")
    return obj


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_loads = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant).decode

# "\ud800"-style escapes decode to lone surrogates, which cannot be encoded as UTF-8 later
# (SQLite, the audit log, the websocket): refuse them here. Only escapes can produce one,
# so the scan is a cheap regex on the raw text and the real check runs only on a hit.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MAX_ID = 128
# Arrays and objects inside one another, the envelope included.  Deeper values cannot be
# re-encoded by every consumer (cattrs and json recurse per level, and a level-2 action's
# arguments are sent to every admin), so they are refused here, once, for the sender.
MAX_DEPTH = 64
# Arrays and objects in one frame.  Parsing costs per container (json builds each list and
# dict): 1 MiB of "[[],[],...]" is ~350k of them and half a second of the event loop.
MAX_CONTAINERS = 16_384
# JSON string literals, to count only the brackets outside them (linear: no nested repetition).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _brackets(text: str) -> int:
    return text.count("[") + text.count("{")


def _check_containers(text: str) -> None:
    """Refuse a frame with more arrays/objects than :data:`MAX_CONTAINERS`, before parsing it."""
    if _brackets(text) > MAX_CONTAINERS and _brackets(_STRING.sub("", text)) > MAX_CONTAINERS:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"the frame holds more than {MAX_CONTAINERS} arrays and objects",
            details={"path": "$", "max_containers": MAX_CONTAINERS},
        )


def _too_deep(obj: Any, limit: int) -> bool:
    """Whether ``obj`` nests more than ``limit`` arrays/objects; iterative, stops at the first."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


def _parse(text: str | bytes, bounded: bool) -> tuple[Any, str]:
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid UTF-8") from None
    if bounded:
        _check_containers(text)
    try:
        obj = _loads(text)
    except _DuplicateKey as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"invalid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_JSON,
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            details={"line": exc.lineno, "column": exc.colno},
        ) from None
    except ValueError as exc:  # NaN/Infinity, integers beyond the digit limit
        raise ProtocolError(ErrorCode.BAD_JSON, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_JSON, "invalid JSON: nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(
                ErrorCode.BAD_JSON, "invalid JSON: unpaired UTF-16 surrogate escape"
            ) from None
    return obj, text


def _decode(
    text: str | bytes, table: dict[str, _Kind], other: dict[str, _Kind], sender: str, *, bounded: bool
) -> Any:
    """``bounded``: apply the container and depth limits (frames from clients; the server's
    own frames, e.g. a large tool result, are not held to them)."""
    obj, text = _parse(text, bounded)
    if type(obj) is not dict:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "a frame must be a JSON object", details={"path": "$"}
        )
    fid = obj.get("id")
    reply_to = fid if type(fid) is str and 0 < len(fid) <= _MAX_ID else None
    # Counting brackets is C-fast and bounds the depth from above: walk only when it could be deep.
    if bounded and _brackets(text) > MAX_DEPTH and _too_deep(obj, MAX_DEPTH):
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"the frame nests arrays and objects more than {MAX_DEPTH} levels deep",
            reply_to=reply_to, details={"path": "$", "max_depth": MAX_DEPTH},
        )
    msg_type = obj.get("type")
    if type(msg_type) is not str:
        what = "missing field" if "type" not in obj else "must be a string"
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"$.type: {what}", reply_to=reply_to,
            details={"path": "$.type"},
        )
    kind = table.get(msg_type)
    if kind is None:
        if msg_type in other:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"{msg_type!r} frames are never sent by the {sender}",
                reply_to=reply_to, details={"path": "$.type"},
            )
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {json.dumps(msg_type[:64], ensure_ascii=False)}",
            reply_to=reply_to, details={"path": "$.type"},
        )
    # Valid frames pay only the fast check; jsonschema runs when it says no, to find
    # (and word) what is wrong. It is the authority: if it finds nothing, accept.
    errors = [] if kind.check(obj) else list(kind.validator.iter_errors(obj))
    if errors:
        message, details = explain(errors)
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"invalid {msg_type} frame: {message}",
            reply_to=reply_to, details=details,
        )
    try:
        return _conv.structure(obj, kind.cls)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        # The schema should have caught everything the classes refuse; if it did not,
        # the frame is still the client's mistake, not a server failure.
        problems = (
            cattrs.transform_error(exc) if isinstance(exc, cattrs.BaseValidationError)
            else [str(exc)]
        )
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"invalid {msg_type} frame: {problems[0]}",
            reply_to=reply_to, details={"path": "$", "errors": problems[:10]},
        ) from None


def decode(text: str | bytes) -> m.ClientFrame:
    """Decode and validate one frame sent by a client.

    Raises :class:`ProtocolError` (``bad_json``, ``invalid_message`` or
    ``unknown_type``, with ``reply_to`` set when the frame had a valid string id).
    Never raises anything else for any input of type ``str`` or ``bytes``.
    """
    return _decode(text, _CLIENT, _SERVER, "client", bounded=True)  # type: ignore[no-any-return]


def decode_server(text: str | bytes) -> m.ServerFrame:
    """Decode and validate one frame sent by the server (for clients and tests); the
    mirror of :func:`decode`, with the same errors."""
    return _decode(text, _SERVER, _CLIENT, "server", bounded=False)  # type: ignore[no-any-return]


# --- encoding --------------------------------------------------------------------------


def to_wire(frame: m.Frame) -> dict[str, Any]:
    """The frame as the JSON-ready dict ``{"type", "id", "payload"}``."""
    return _conv.unstructure(frame)  # type: ignore[no-any-return]


# One encoder for every frame: json.dumps with options builds a new JSONEncoder per call.
_dumps: Callable[[Any], str] = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode(frame: m.Frame) -> str:
    """One frame (either direction) as compact JSON text, ready to send.

    Raises ``ValueError`` when a JSON field holds NaN/Infinity (not representable in
    JSON) and ``TypeError`` when it holds something that is not JSON at all.
    """
    if type(frame) is m.ToolList:
        return _encode_tool_list(frame)
    return _dumps(_conv.unstructure(frame))


# The JSON of recently sent tool lists, by the identity of their ``tools`` tuple (kept in
# the value, so that the id cannot be reused while cached). The server lists the same
# tuple to every connection of one subject and roles (engine.server.connection), and a
# tool list is its largest routine frame: unstructuring and dumping its schemas is most
# of a tool_list round trip's CPU.
_TOOLS_JSON: dict[int, tuple[tuple[m.ToolInfo, ...], str]] = {}
_TOOLS_JSON_MAX = 256
_NO_TOOLS = '"tools":[]'


def _encode_tool_list(frame: m.ToolList) -> str:
    tools = frame.tools
    cached = _TOOLS_JSON.get(id(tools))
    if cached is None or cached[0] is not tools:
        if len(_TOOLS_JSON) >= _TOOLS_JSON_MAX:
            _TOOLS_JSON.clear()
        cached = _TOOLS_JSON[id(tools)] = (tools, _dumps(_conv.unstructure(tools, tuple[m.ToolInfo, ...])))
    # The frame with no tools, then its empty list replaced by the cached one: '"tools":[]'
    # cannot occur inside a JSON string (its quotes would be escaped), so the first one is the field.
    shell = _dumps(_conv.unstructure(m.ToolList(id=frame.id, tools=(), reply_to=frame.reply_to)))
    return shell.replace(_NO_TOOLS, '"tools":' + cached[1], 1)


def error_frame(error: ProtocolError) -> m.ErrorFrame:
    """The ``error`` frame that reports ``error`` to the client."""
    return m.ErrorFrame(
        code=error.code, message=error.message, reply_to=error.reply_to,
        details=dict(error.details),
    )
