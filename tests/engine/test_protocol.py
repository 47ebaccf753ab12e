"""The wire protocol: every bad frame class gets its code and reply_to, every valid
client frame round-trips, every server frame class validates against the shipped schema."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from jsonschema import Draft202012Validator

import engine.protocol as p
from engine.protocol import ErrorCode, ProtocolError, _codec

SCHEMA = p.schema()
ROOT = Draft202012Validator(SCHEMA)


def _sub(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]})


CLIENT_V = _sub("client_frame")
SERVER_V = _sub("server_frame")


def frame(type_: str, payload: Any, id_: Any = "f-1") -> str:
    return json.dumps({"type": type_, "id": id_, "payload": payload})


def refused(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        p.decode(text)
    return info.value


# --- bad frames ------------------------------------------------------------------------

UM = {"session_id": "s1", "content": "hi"}

BAD_FRAMES = [
    # (label, input, code, reply_to, details path or None)
    ("syntax", '{"type": "user_message",', ErrorCode.BAD_JSON, None, None),
    ("empty", "", ErrorCode.BAD_JSON, None, None),
    ("not utf-8", b'{"type":"user_message","id":"f-1","payload":{"content":"\xff"}}',
     ErrorCode.BAD_JSON, None, None),
    ("NaN", '{"type":"user_message","id":"f-1","payload":{"session_id":"s","content":NaN}}',
     ErrorCode.BAD_JSON, None, None),
    ("duplicate key", '{"type":"action_approval","id":"f-1","payload":'
     '{"action_id":"a","approved":false,"approved":true}}', ErrorCode.BAD_JSON, None, None),
    ("lone surrogate", '{"type":"user_message","id":"f-1","payload":'
     '{"session_id":"s","content":"\\ud800"}}', ErrorCode.BAD_JSON, None, None),
    ("too deep", "[" * 100_000 + "]" * 100_000, ErrorCode.TOO_LARGE, None, None),
    ("array", "[]", ErrorCode.INVALID_MESSAGE, None, "$"),
    ("string", '"x"', ErrorCode.INVALID_MESSAGE, None, "$"),
    ("number", "1", ErrorCode.INVALID_MESSAGE, None, "$"),
    ("null", "null", ErrorCode.INVALID_MESSAGE, None, "$"),
    ("unknown type", frame("launch_missiles", {}), ErrorCode.UNKNOWN_TYPE, "f-1", "$.type"),
    ("unknown type, no id", json.dumps({"type": "nope", "payload": {}}),
     ErrorCode.UNKNOWN_TYPE, None, "$.type"),
    ("missing type", json.dumps({"id": "f-1", "payload": UM}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.type"),
    ("type not a string", frame(5, UM), ErrorCode.INVALID_MESSAGE, "f-1", "$.type"),  # type: ignore[arg-type]
    ("server-only agent_state", frame("agent_state", {"session_id": "s", "agent": "a",
     "state": "active"}), ErrorCode.INVALID_MESSAGE, "f-1", "$.type"),
    ("server-only response_token", frame("response_token", {}), ErrorCode.INVALID_MESSAGE,
     "f-1", "$.type"),
    ("server-only error", frame("error", {}), ErrorCode.INVALID_MESSAGE, "f-1", "$.type"),
    ("missing payload field", frame("user_message", {"session_id": "s1"}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload.content"),
    ("wrong field type", frame("user_message", {"session_id": 5, "content": "hi"}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload.session_id"),
    ("bool as string", frame("action_approval", {"action_id": "a", "approved": "false"}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload.approved"),
    ("bool as level", frame("tool_list", {"tools": [{"name": "t", "description": "d",
     "parameters": {}, "level": True}]}), ErrorCode.INVALID_MESSAGE, "f-1",
     "$.payload.tools[0].level"),
    ("bad enum", frame("agent_control", {"session_id": "s", "command": "explode"}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload.command"),
    ("empty agent name", frame("agent_connect", {"agent": ""}), ErrorCode.INVALID_MESSAGE,
     "f-1", "$.payload.agent"),
    ("extra payload field", frame("user_message", {**UM, "sneaky": 1}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload.sneaky"),
    ("extra envelope field", json.dumps({"type": "user_message", "id": "f-1", "payload": UM,
     "x": 1}), ErrorCode.INVALID_MESSAGE, "f-1", "$.x"),
    ("payload on resource_list", frame("resource_list", {"filter": "*"}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload.filter"),
    ("missing payload", json.dumps({"type": "user_message", "id": "f-1"}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload"),
    ("payload not object", frame("user_message", [1]), ErrorCode.INVALID_MESSAGE, "f-1",
     "$.payload"),
    ("arguments not object", frame("tool_call", {"name": "clock", "arguments": []}),
     ErrorCode.INVALID_MESSAGE, "f-1", "$.payload.arguments"),
    ("missing id", json.dumps({"type": "user_message", "payload": UM}),
     ErrorCode.INVALID_MESSAGE, None, "$.id"),
    ("id not a string", frame("user_message", UM, id_=7), ErrorCode.INVALID_MESSAGE, None,
     "$.id"),
    ("id too long", frame("user_message", UM, id_="x" * 129), ErrorCode.INVALID_MESSAGE,
     None, "$.id"),
]


@pytest.mark.parametrize(("label", "text", "code", "reply_to", "path"), BAD_FRAMES,
                         ids=[b[0] for b in BAD_FRAMES])
def test_bad_frame(label: str, text: str | bytes, code: ErrorCode, reply_to: str | None,
                   path: str | None) -> None:
    err = refused(text)
    assert err.code is code
    assert err.reply_to == reply_to
    if path is not None:
        assert err.details["path"] == path
    # The error frame reporting it is itself valid protocol.
    assert SERVER_V.is_valid(json.loads(p.encode(p.error_frame(err))))


def test_error_message_does_not_echo_large_values() -> None:
    err = refused(frame("user_message", {"session_id": ["A" * 10_000], "content": "x"}))
    assert err.details["path"] == "$.payload.session_id"
    assert "AAAA" not in err.message
    assert len(json.dumps(dict(err.details))) < 2_000


def test_unknown_type_name_is_clipped() -> None:
    err = refused(frame("z" * 10_000, {}))
    assert err.code is ErrorCode.UNKNOWN_TYPE
    assert len(err.message) < 200


def test_errors_list_every_problem() -> None:
    err = refused(frame("user_message", {"session_id": 5, "extra": 1}))
    paths = {e["path"] for e in err.details["errors"]}
    assert paths == {"$.payload.session_id", "$.payload.extra", "$.payload.content"}


def test_surrogate_pair_escape_is_fine() -> None:
    msg = p.decode('{"type":"user_message","id":"f","payload":'
                   '{"session_id":"s","content":"\\ud83d\\ude00"}}')
    assert msg == p.UserMessage(id="f", session_id="s", content="😀")


def test_bytes_and_str_decode_alike() -> None:
    text = frame("user_message", {"session_id": "s", "content": "grüße"})
    assert p.decode(text) == p.decode(text.encode("utf-8"))


# --- valid client frames round-trip ----------------------------------------------------

CLIENT_FRAMES: list[Any] = [
    p.AgentConnect(id="c1", agent="helper"),
    p.AgentConnect(id="c2", agent="helper", session_id="s1"),
    p.UserMessage(id="c3", session_id="s1", content="what is 17*23 — ✓"),
    p.ActionApproval(id="c4", action_id="a1", approved=True),
    p.ActionApproval(id="c5", action_id="a1", approved=False, reason="no"),
    p.ClientAgentResult(id="c6", action_id="a1", status=p.ResultStatus.OK,
                        output={"lines": ["x"], "n": 1.5}),
    p.ClientAgentResult(id="c7", action_id="a1", status=p.ResultStatus.ERROR, output=None,
                        session_id="s1"),
    p.ClientToolList(id="c8"),
    p.ClientToolList(id="c9", tools=()),
    p.ClientToolList(id="c10", tools=(
        p.OfferedTool(name="geo.locate", description="where am I",
                      parameters={"type": "object", "properties": {}}),
        p.OfferedTool(name="camera", description="take a photo", parameters={}, level=1),
    )),
    p.ToolCall(id="c11", name="clock", arguments={}),
    p.ToolCall(id="c12", name="calc", arguments={"expr": "17*23", "nested": {"a": [1, None]}},
               session_id="s1"),
    p.ResourceRequest(id="c13", uri="file://notes.txt"),
    p.ResourceRequest(id="c14", uri="db://users/profile/7", session_id="s1"),
    p.AgentControl(id="c15", session_id="s1", command=p.AgentCommand.PAUSE),
    p.ResourceListRequest(id="c16"),
    p.ActionListRequest(id="c17"),
    p.ActionApproval(id="c18", action_id="a1", approved=True,
                     remember=p.Remember(scope=p.RememberScope.DURATION, duration="1h", match={"path": "same"})),
    p.GrantListRequest(id="c19"),
    p.GrantListRequest(id="c20", session_id="s1", all=True),
    p.GrantRevoke(id="c21", grant_id="g1", reason="no longer needed"),
    p.MemoryListRequest(id="c22"),
    p.MemoryListRequest(id="c23", agent="helper"),
    p.MemoryForget(id="c24", memory_id="m1"),
    p.MemoryForget(id="c25", all=True, agent="helper"),
    p.Feedback(id="c26", turn_id="t1", rating=1),
    p.Feedback(id="c27", turn_id="t1", rating=-1, comment="wrong city ✓"),
]


def test_every_client_type_is_covered() -> None:
    assert {type(f) for f in CLIENT_FRAMES} == set(p.ClientFrame.__args__)


@pytest.mark.parametrize("frame_obj", CLIENT_FRAMES, ids=lambda f: f.id)
def test_client_frame_round_trip(frame_obj: Any) -> None:
    text = p.encode(frame_obj)
    wire = json.loads(text)
    assert CLIENT_V.is_valid(wire), list(CLIENT_V.iter_errors(wire))
    assert ROOT.is_valid(wire)
    decoded = p.decode(text)
    assert decoded == frame_obj
    assert type(decoded) is type(frame_obj)
    # and the wire form survives decode → encode unchanged
    assert json.loads(p.encode(decoded)) == wire


def test_empty_tool_list_payload_means_ask() -> None:
    assert p.decode(frame("tool_list", {})) == p.ClientToolList(id="f-1", tools=None)
    assert json.loads(p.encode(p.ClientToolList(id="x")))["payload"] == {}


def test_enum_fields_are_enums() -> None:
    f = p.decode(frame("agent_control", {"session_id": "s", "command": "stop"}))
    assert isinstance(f, p.AgentControl) and f.command is p.AgentCommand.STOP


# --- server frames ---------------------------------------------------------------------

TOOLS = (p.ToolInfo(name="clock", description="the time",
                    parameters={"type": "object", "properties": {}}, level=0),)

SERVER_FRAMES: list[Any] = [
    p.AgentState(session_id="s1", agent="helper", state=p.LifecycleState.ACTIVE),
    p.AgentState(session_id="s1", agent="helper", state=p.LifecycleState.TOOL_USE,
                 reply_to="c1"),
    p.ResponseToken(session_id="s1", turn_id="t1", token="Hel"),
    p.AgentResponse(session_id="s1", turn_id="t1", content="Hello"),
    p.AgentAction(session_id="s1", action_id="a1", kind=p.ActionKind.TOOL, name="shell",
                  arguments={"cmd": "ls"}, level=1, requires_approval=True,
                  approver=p.Approver.USER, executor=p.Executor.SERVER, reason="level 1"),
    p.AgentAction(action_id="a2", kind=p.ActionKind.RESOURCE, name="file://notes.txt",
                  arguments={}, level=0, requires_approval=False, approver=p.Approver.NONE,
                  executor=p.Executor.CLIENT, reason="allowed", reply_to="c11"),
    p.AgentResult(session_id="s1", action_id="a1", status=p.ResultStatus.OK,
                  output={"stdout": "x"}),
    p.AgentResult(action_id="a2", status=p.ResultStatus.LIMIT_EXCEEDED, output=None,
                  reply_to="c11"),
    p.ToolList(tools=TOOLS),
    p.ToolList(tools=(), reply_to="c8"),
    p.ResourceResponse.of(uri="file://notes.txt", mime_type="text/plain", data="hi",
                          truncated=False, reply_to="c13"),
    p.ResourceResponse.of(uri="file://a.png", mime_type="image/png", data=b"\x89PNG\x00",
                          truncated=True, reply_to="c13"),
    p.ResourceList(resources=(p.ResourceInfo(uri_template="db://users/profile/{id}",
                                             description="user profiles"),), reply_to="c16"),
    p.ActionList(actions=(p.PendingActionInfo(
        action_id="a1", kind=p.ActionKind.TOOL, name="shell", arguments={"command": "ls"}, level=2,
        approver=p.Approver.ADMIN, requester="alice", reason="level 2: an admin approves", expires_in_s=90.5,
        session_id="s1"),), reply_to="c17"),
    p.ActionList(actions=(), reply_to="c17"),
    p.AgentAction(session_id="s1", action_id="a3", kind=p.ActionKind.TOOL, name="read_file",
                  arguments={"path": "notes.txt"}, level=1, requires_approval=False,
                  approver=p.Approver.USER, executor=p.Executor.SERVER, reason="covered by grant g1",
                  grant=p.GrantRef(grant_id="g1", made_by="alice", scope="session")),
    p.GrantList(grants=(p.GrantInfo(
        grant_id="g1", subject="alice", made_by="alice", scope="session", session_id="s1",
        kind=p.ActionKind.TOOL, name="read_file", arguments={"path": "notes.txt"}, match={"path": "same"},
        level=1, approver=p.Approver.USER, rule_id="tools-up-to-level-2", created_at="2026-01-01T00:00:00.000000Z",
        expires_at="2026-01-01T08:00:00.000000Z", expires_in_s=28800.0, status="live"),), reply_to="c19"),
    p.GrantRevoked(grant=p.GrantInfo(
        grant_id="g1", subject="alice", made_by="admin", scope="duration", kind=p.ActionKind.TOOL, name="shell",
        arguments={"command": "ls"}, level=2, approver=p.Approver.ADMIN, rule_id="r", created_at="x",
        expires_at="y", expires_in_s=0.0, status="revoked", ended_by="admin", end_reason="done"), reply_to="c21"),
    p.ErrorFrame(code=ErrorCode.NOT_FOUND, message="no such session", reply_to="c3"),
    p.error_frame(ProtocolError(ErrorCode.INTERNAL, "internal error")),
    p.MemoryList(memories=(p.MemoryInfo(memory_id="m1", agent="helper", content="likes tea", created_at=1.5),),
                 reply_to="c18"),
    p.MemoryForgotten(forgotten=2, reply_to="c21"),
    p.FeedbackRecorded(turn_id="t1", rating=-1, replaced=False, reply_to="c23"),
]


def test_every_server_type_is_covered() -> None:
    assert {type(f) for f in SERVER_FRAMES} == set(p.ServerFrame.__args__)


@pytest.mark.parametrize("frame_obj", SERVER_FRAMES, ids=lambda f: f.TYPE)
def test_server_frame_validates(frame_obj: Any) -> None:
    wire = json.loads(p.encode(frame_obj))
    assert SERVER_V.is_valid(wire), list(SERVER_V.iter_errors(wire))
    assert ROOT.is_valid(wire)
    assert wire["type"] == frame_obj.TYPE and wire["id"] == frame_obj.id
    assert p.decode_server(p.encode(frame_obj)) == frame_obj


def test_server_frames_get_fresh_ids() -> None:
    a = p.ResponseToken(session_id="s", turn_id="t", token="x")
    b = p.ResponseToken(session_id="s", turn_id="t", token="x")
    assert a.id != b.id and len(a.id) == 32


def test_error_frame_carries_everything() -> None:
    err = ProtocolError(ErrorCode.FORBIDDEN, "not your session", details={"session_id": "s"})
    wire = json.loads(p.encode(p.error_frame(err.replying_to("c9"))))
    assert wire["payload"] == {"code": "forbidden", "message": "not your session",
                               "reply_to": "c9", "details": {"session_id": "s"}}
    # reply_to stays on the wire as null when unknown
    assert json.loads(p.encode(p.error_frame(err)))["payload"]["reply_to"] is None


def test_optional_fields_are_omitted_not_null() -> None:
    wire = json.loads(p.encode(p.AgentState(session_id="s", agent="a",
                                            state=p.LifecycleState.PAUSED)))
    assert "reply_to" not in wire["payload"]


def test_resource_response_needs_exactly_one_content() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        p.ResourceResponse(uri="u", mime_type="text/plain", truncated=False, reply_to="r")
    with pytest.raises(ValueError, match="exactly one"):
        p.ResourceResponse(uri="u", mime_type="text/plain", truncated=False, reply_to="r",
                           content="a", content_base64="YQ==")


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        p.encode(p.AgentResult(action_id="a", status=p.ResultStatus.OK, output=float("nan")))


def test_client_cannot_send_what_only_server_sends_and_vice_versa() -> None:
    with pytest.raises(ProtocolError) as info:
        p.decode_server(p.encode(p.UserMessage(id="u", session_id="s", content="x")))
    assert info.value.code is ErrorCode.INVALID_MESSAGE


# --- the schema ------------------------------------------------------------------------


def test_schema_is_valid_and_documented() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == p.SCHEMA_ID and SCHEMA["title"] and SCHEMA["description"]
    assert json.loads(p.schema_text()) == SCHEMA
    for name, definition in SCHEMA["$defs"].items():
        assert definition.get("description") or definition.get("title"), name


def test_schema_returns_a_copy() -> None:
    p.schema()["$defs"].clear()
    assert p.schema()["$defs"]


def test_schema_error_codes_match_enum() -> None:
    codes = SCHEMA["$defs"]["error"]["properties"]["payload"]["properties"]["code"]["enum"]
    assert codes == [c.value for c in ErrorCode]


def test_payloads_forbid_extra_fields() -> None:
    for name, kind in {**_codec._CLIENT, **_codec._SERVER}.items():
        payload = kind.validator.schema["properties"]["payload"]
        assert payload.get("additionalProperties") is False, name


# --- the fast checker agrees with jsonschema -------------------------------------------

ODD_VALUES: list[Any] = [None, 0, -1, 4, 1.0, 2.5, True, False, "", "x", "a b\n", "z" * 200,
                         [], [1], {}, {"k": 1}]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutations(wire: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for path in _paths(wire)[1:]:
        for odd in ODD_VALUES:
            copy = json.loads(json.dumps(wire))
            node = copy
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = odd
            out.append(copy)
        copy = json.loads(json.dumps(wire))
        node = copy
        for part in path[:-1]:
            node = node[part]
        if isinstance(node, dict):
            del node[path[-1]]
            out.append(copy)
            node2 = json.loads(json.dumps(wire))
            target = node2
            for part in path[:-1]:
                target = target[part]
            target["unexpected"] = 1
            out.append(node2)
    return out


@pytest.mark.parametrize(
    ("direction", "frames"), [("client", CLIENT_FRAMES), ("server", SERVER_FRAMES)]
)
def test_fast_check_never_accepts_what_jsonschema_refuses(direction: str,
                                                          frames: list[Any]) -> None:
    table = _codec._CLIENT if direction == "client" else _codec._SERVER
    checked = 0
    for f in frames:
        wire = json.loads(p.encode(f))
        kind = table[wire["type"]]
        assert kind.check(wire), wire  # valid frames take the fast path
        for mutated in _mutations(wire):
            if kind.check(mutated):
                assert kind.validator.is_valid(mutated), mutated
            checked += 1
    assert checked > 500


def test_frames_are_frozen_and_hashable() -> None:
    f = CLIENT_FRAMES[11]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        f.name = "other"  # type: ignore[misc]
    assert hash(f) == hash(attrs.evolve(f))


def test_every_enum_field_decodes_to_its_enum() -> None:
    for f in CLIENT_FRAMES:
        decoded = p.decode(p.encode(f))
        for a in attrs.fields(type(f)):
            value = getattr(decoded, a.name)
            if isinstance(getattr(f, a.name), p.ResultStatus | p.AgentCommand):
                assert type(value) is type(getattr(f, a.name))
    for f in SERVER_FRAMES:
        decoded = p.decode_server(p.encode(f))
        for a in attrs.fields(type(f)):
            original = getattr(f, a.name)
            if isinstance(original, (p.LifecycleState, p.ActionKind, p.Approver, p.Executor,
                                     p.ResultStatus, ErrorCode)):
                assert type(getattr(decoded, a.name)) is type(original), a.name


def test_decode_raises_only_protocol_errors_on_mutated_frames() -> None:
    outcomes = {"ok": 0, "refused": 0}
    for f in CLIENT_FRAMES:
        for mutated in _mutations(json.loads(p.encode(f))):
            try:
                p.decode(json.dumps(mutated))
                outcomes["ok"] += 1
            except ProtocolError as err:
                assert err.code in (ErrorCode.INVALID_MESSAGE, ErrorCode.UNKNOWN_TYPE)
                outcomes["refused"] += 1
    assert outcomes["ok"] > 0 and outcomes["refused"] > 500


def test_fast_checker_refuses_keywords_it_does_not_know() -> None:
    from engine.protocol._fastcheck import compile_check

    with pytest.raises(ValueError, match="format"):
        compile_check({"type": "string", "format": "uri"}, {})


def test_a_tool_list_encodes_as_the_generic_encoder_would_cached_or_not() -> None:
    """The tool list's cached-JSON path (engine.protocol._codec) gives the very text the
    generic path gives, whatever the descriptions hold (quotes, the field's own name,
    non-ASCII), with or without reply_to, on a cache miss and on a hit; and a value that
    cannot be JSON still raises as before."""
    tools = (
        p.ToolInfo(name="a", description='has "tools":[] and \\" in it', parameters={"type": "object"}, level=0),
        p.ToolInfo(name="b", description="ünïcode ✓", parameters={"x": [1, {"y": None}], "z": 1.5}, level=2),
    )
    for reply_to in (None, "r-1", '"tools":[]'):
        for _ in range(2):  # a miss, then a hit
            frame = p.ToolList(tools=tools, reply_to=reply_to)
            generic = json.dumps(p.to_wire(frame), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            assert p.encode(frame) == generic
            assert p.decode_server(p.encode(frame)) == frame
    assert p.encode(p.ToolList(tools=())).startswith('{"type":"tool_list"')
    with pytest.raises(ValueError):
        p.encode(p.ToolList(tools=(p.ToolInfo(name="n", description="", parameters={"x": float("nan")}, level=0),)))


def test_new_ids_are_distinct_random_uuid4_hex() -> None:
    import uuid

    # More than one batch of ids made ahead (engine.protocol._messages._IDS_AT_ONCE).
    ids = [p.new_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for made in ids:
        parsed = uuid.UUID(hex=made)
        assert parsed.hex == made and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_makes_ids_of_its_own() -> None:
    import os

    p.new_id()  # the parent holds ids made ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(p.new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    theirs = {child[i:i + 32] for i in range(0, len(child), 32)}
    ours = {p.new_id() for _ in range(5)}
    assert len(theirs) == 5 and not theirs & ours
