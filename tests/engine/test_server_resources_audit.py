"""Resources through the server under policy, and the audit trail the flows leave behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from engine.audit import query, verify
from engine.client import ServerError, open_client
from engine.protocol import (
    AgentAction,
    AgentResponse,
    AgentResult,
    ErrorFrame,
    ResourceList,
    ResourceListRequest,
    ResourceRequest,
    ResourceResponse,
    new_id,
)
from tests.engine.conftest import RunningServer


async def _read(client, uri: str) -> ResourceResponse:  # type: ignore[no-untyped-def]
    reply = await client.request(ResourceRequest(id=new_id(), uri=uri))
    assert isinstance(reply, ResourceResponse)
    return reply


async def test_direct_reads_under_policy(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            welcome = await _read(client, "file://local/documents/welcome.md")
            assert welcome.mime_type == "text/markdown" and "Welcome" in (welcome.content or "")
            profile = await _read(client, "db://users/profile/42")
            assert json.loads(profile.content or "") == [
                {"id": 42, "name": "Douglas Adams", "email": "douglas@example.com", "team": "platform"}
            ]
            for uri, code in [
                ("file://local/secrets/example-credentials.txt", "forbidden"),
                ("file://local/documents/../secrets/example-credentials.txt", "invalid_arguments"),
                ("file://local/documents/%2e%2e/secrets/x", "invalid_arguments"),
                ("file://nowhere/x", "not_found"),
                ("ftp://local/x", "not_found"),
                ("db://users/profile/abc", "invalid_arguments"),
                ("db://users/nothing/1", "not_found"),
                ("file://local/documents/missing.md", "not_found"),
            ]:
                with pytest.raises(ServerError) as caught:
                    await _read(client, uri)
                assert caught.value.code == code, uri


async def test_resource_list_is_filtered_by_policy(server: RunningServer) -> None:
    async with open_client(server.url, server.token()) as client:
        listing = await client.request(ResourceListRequest(id=new_id()))
        assert isinstance(listing, ResourceList)
        templates = {item.uri_template for item in listing.resources}
        assert "db://users/profile/{id}" in templates
        assert "file://local/documents/{path}" in templates
        assert "file://local/secrets/{path}" not in templates
    async with open_client(server.url, server.token("nobody", ())) as stranger:
        listing = await stranger.request(ResourceListRequest(id=new_id()))
        assert listing.resources == ()


async def test_agent_reads_a_resource_as_an_action(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            sid = (await client.start_session("assistant")).session_id
            turn = await client.converse(sid, "show me the profile of user 3")
            [action] = turn.actions
            assert (str(action.kind), action.name) == ("resource", "db://users/profile/3")
            assert "Grace Hopper" in turn.response.content
            secret = await client.converse(sid, "show the secret example-credentials.txt")
            assert str(secret.results[0].status) == "denied"
            assert "could not read that resource" in secret.response.content


async def test_the_audit_trail_of_a_session_verifies(server: RunningServer) -> None:
    with trio.fail_after(30):
        from trio_websocket import ConnectionRejected, open_websocket_url

        with pytest.raises(ConnectionRejected):
            async with open_websocket_url(server.url, extra_headers=[("Authorization", "Bearer nope")]):
                pass
        async with open_client(server.url, server.token("root", ("admin",))) as admin:
            async with open_client(server.url, server.token("alice")) as user:
                sid = (await user.start_session("assistant")).session_id
                await user.converse(sid, "what is 6*7")
                await user.send_message(sid, 'write "audited" to trail.txt')
                seen = await admin.next_event_of(AgentAction)
                await admin.answer(seen.action_id, True)
                await user.next_event_of(AgentResponse)
                await user.converse(sid, "show the document welcome.md")
    state = server.settings.state_dir
    records = await trio.to_thread.run_sync(lambda: query(state))
    kinds = {(r.kind, r.target, r.outcome) for r in records}
    assert ("auth_failure", None, "malformed") in kinds
    assert ("decision", "calculator", "allow") in kinds
    assert ("execution", "calculator", "ok") in kinds
    assert ("decision", "write_file", "require_approval") in kinds
    assert ("resource_read", "file://local/documents/welcome.md", "ok") in kinds
    [approval] = [r for r in records if r.kind == "approval"]
    assert (approval.decided_by, approval.approver, approval.outcome) == ("person", "root", "approved")
    assert all(
        r.policy_revision and r.policy_revision.startswith("sha256:") for r in records if r.kind != "auth_failure"
    )
    report = await trio.to_thread.run_sync(verify, state)
    assert report.ok, report


async def test_self_approval_only_where_a_rule_allows_it(start_server, config_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "policies" / "self.yaml").write_text(
        "name: self\n"
        "description: Admins may approve their own workspace writes.\n"
        "rules:\n"
        "  - id: admins-self-approve-writes\n"
        "    effect: require_approval\n"
        "    approver: admin\n"
        "    self_approval: true\n"
        "    subjects: {roles: [admin]}\n"
        "    targets: {tools: [write_file]}\n"
    )
    server = await start_server(config_dir)
    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice", ("user",))) as user:
            from engine.protocol import ToolCall

            await user.send(ToolCall(id="u1", name="write_file", arguments={"path": "theirs.txt", "content": "x"}))
            action = await user.next_event_of(AgentAction)
            await user.answer(action.action_id, True)
            error = await user.next_event_of(ErrorFrame)
            assert error.code == "forbidden"
    with trio.fail_after(20):
        async with open_client(server.url, server.token("root", ("admin",))) as admin:
            from engine.protocol import ToolCall

            await admin.send(ToolCall(id="w1", name="write_file", arguments={"path": "mine.txt", "content": "x"}))
            action = await admin.next_event_of(AgentAction)
            await admin.answer(action.action_id, True)
            result = await admin.next_event_of(AgentResult)
            assert str(result.status) == "ok"


async def test_an_admin_cannot_approve_their_own_request_without_a_rule(server: RunningServer) -> None:
    from engine.protocol import ToolCall

    with trio.fail_after(20):
        async with open_client(server.url, server.token("root", ("admin",))) as admin:
            await admin.send(ToolCall(id="a1", name="write_file", arguments={"path": "x.txt", "content": "x"}))
            action = await admin.next_event_of(AgentAction)
            await admin.answer(action.action_id, True)
            error = await admin.next_event_of(ErrorFrame)
            assert error.code == "forbidden"
