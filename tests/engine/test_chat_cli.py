"""``sconnect chat`` as a real subprocess against a real server: what a person at the terminal sees."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio

import sandbox
from engine.auth import AuthSettings, issue
from engine.cli.chat._state import ANSWER_AGAIN
from engine.server import ServerSettings, serve
from engine.toolrun import subject_workspace
from tests.conftest import REPO
from tests.engine.conftest import SECRET, SLEEPER, RunningServer
from tests.engine.processes import unique_marker, until_gone, until_running

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


@attrs.define(eq=False)
class ChatProcess:
    """A running ``sconnect chat``: write lines to it, wait for text in its output."""

    process: trio.Process
    output: str = ""

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def expect(self, text: str) -> str:
        """Read until ``text`` has appeared after everything already expected; the output so far."""
        assert self.process.stdout is not None
        while text not in self.output:
            chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise AssertionError(f"chat ended before printing {text!r}; output:\n{self.output}")
            self.output += chunk.decode()
        seen, self.output = self.output, self.output[self.output.index(text) + len(text) :]
        return seen

    async def ended(self) -> tuple[int, str, str]:
        """Wait, stdin left open, until the chat exits by itself: the exit code, the rest of stdout, stderr."""
        assert self.process.stdout is not None and self.process.stderr is not None
        while chunk := await self.process.stdout.receive_some():
            self.output += chunk.decode()
        errors = b""
        while chunk := await self.process.stderr.receive_some():
            errors += chunk
        return await self.process.wait(), self.output, errors.decode()

    async def finish(self) -> tuple[int, str]:
        """Close stdin (end of input) and collect the rest of the output and the exit code."""
        assert self.process.stdin is not None and self.process.stdout is not None
        await self.process.stdin.aclose()
        while chunk := await self.process.stdout.receive_some():
            self.output += chunk.decode()
        return await self.process.wait(), self.output


@attrs.frozen
class Command:
    """A chat's argv and environment: the token travels in $SCONNECT_TOKEN, never on the command line."""

    argv: list[str]
    env: dict[str, str]


def _argv(server: RunningServer, *extra: str, token: str | None = None) -> Command:
    argv = [sys.executable, "-m", "engine", "chat", "--url", server.url, *extra]
    return Command(argv, _env(token or server.token()))


def _env(token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SCONNECT_TOKEN", "NO_COLOR")}
    env["PYTHONPATH"] = str(REPO)
    if token is not None:
        env["SCONNECT_TOKEN"] = token
    return env


async def _open_chat(nursery: trio.Nursery, command: Command, *, stderr: int | None = None) -> ChatProcess:
    run = functools.partial(
        trio.run_process,
        command.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        check=False,
        cwd=REPO,
        env=command.env,
    )
    process = await nursery.start(run)
    return ChatProcess(process)


async def _run_chat(command: Command, lines: str) -> subprocess.CompletedProcess[bytes]:
    """The whole conversation written ahead into stdin, in order."""
    return await trio.run_process(
        command.argv, stdin=lines.encode(), capture_stdout=True, capture_stderr=True, check=False, cwd=REPO,
        env=command.env,
    )


ADMIN_NOTE = "note: nobody approves their own level-2 request; another admin must\n"


def _write_notes(server: RunningServer, text: str) -> None:
    notes = subject_workspace(server.settings.workspace, "alice") / "notes.txt"
    notes.write_text(text)
    if os.geteuid() == 0:
        os.chown(notes, sandbox.SANDBOX_UID, sandbox.SANDBOX_GID)


async def test_level_0_answer_streams_and_quit_exits_0(server: RunningServer) -> None:
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), "what is 17*23\n/quit\n")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert out.startswith("session ") and "resume later with --session " in out
    assert '[action] calculator {"expression": "17*23"} level 0\n' in out
    assert "[result] calculator ok\n" in out
    assert "17*23 = 391\n" in out
    assert done.stderr == b""


async def test_level_1_approved_interactively(server: RunningServer, nursery: trio.Nursery) -> None:
    _write_notes(server, "buy milk\n")
    with trio.fail_after(15):
        chat = await _open_chat(nursery, _argv(server))
        await chat.expect("> ")
        await chat.send("read notes.txt")
        question = await chat.expect("approve? [y/N] ")
        assert '[action] read_file {"path": "notes.txt"} level 1 — needs approval by user: approve? [y/N] ' in question
        await chat.send("y")
        answer = await chat.expect("> ")
        assert "[result] read_file ok" in answer and "buy milk" in answer
        await chat.send("/quit")
        code, _ = await chat.finish()
    assert code == 0


async def test_level_1_denied(server: RunningServer) -> None:
    _write_notes(server, "secret plans\n")
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), "read notes.txt\nn\n/quit\n")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "approve? [y/N] n\ndenied\n" in out
    assert "[result] read_file denied: denied by alice" in out
    assert "could not use the tool" in out
    assert "secret plans" not in out


async def test_pause_refuses_messages_until_resume(server: RunningServer) -> None:
    lines = "/pause\nwhat is 2+2\n/resume\nwhat is 2+2\n/quit\n"
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), lines)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    paused, _, resumed = out.partition("[state] active")
    assert "[state] paused" in paused
    assert "[error invalid_state]" in paused and "2+2 = 4" not in paused
    assert "2+2 = 4" in resumed


async def test_tools_lists_name_level_and_description(server: RunningServer) -> None:
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), "/tools\n")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    # The server lists what the caller may call, not the agent's tools: the heading says so.
    assert "tools you may call directly (tool_call):\n" in out
    calculator = next(line for line in out.splitlines() if line.strip().startswith("calculator "))
    assert "level 0" in calculator and len(calculator.split("level 0", 1)[1].strip()) > 0
    assert any(line.strip().startswith("read_file ") and "level 1" in line for line in out.splitlines())
    # A user never sees the level-3 tools the decision refuses outright.
    assert "send_payment" not in out


async def test_end_ends_the_session_and_the_chat(server: RunningServer) -> None:
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), "/end\nwhat is 1+1\n")
        session_id = done.stdout.decode().split()[1]
        again = await _run_chat(_argv(server, "--session", session_id), "hello\n")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "[state] terminated\nthe session is over\n" in out and "1+1" not in out
    # Ended for good: it cannot be resumed.
    assert again.returncode == 1
    assert again.stderr.decode() == (
        f"sconnect chat: cannot resume session {session_id}: [invalid_state] this session has terminated\n"
    )


async def test_resume_continues_the_session(server: RunningServer) -> None:
    with trio.fail_after(15):
        first = await _run_chat(_argv(server), "hello\n")
        session_id = first.stdout.decode().split()[1]
        again = await _run_chat(_argv(server, "--session", session_id), "what is 6*7\n")
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode().startswith(f"session {session_id} ")
    assert "6*7 = 42" in again.stdout.decode()


async def test_admin_is_asked_about_another_users_level_2_action(server: RunningServer, nursery: trio.Nursery) -> None:
    with trio.fail_after(20):
        admin = await _open_chat(nursery, _argv(server, token=server.token("root", ("admin",))))
        assert (await admin.expect("> ")).count(ADMIN_NOTE) == 1
        user = await _open_chat(nursery, _argv(server))
        greeting = await user.expect("> ")
        assert ADMIN_NOTE not in greeting
        user_session = greeting.split()[1]
        await user.send('write "hello" to greeting.txt')
        waiting = await user.expect("waiting for one to answer")
        assert '[action] write_file {"path": "greeting.txt", "content": "hello"} level 2' in waiting
        question = await admin.expect("approve? [y/N] ")
        # The admin's question names who asked, and in which session.
        asked = f"level 2 (requested by alice, session {user_session[:8]}) — needs approval by admin: approve? [y/N] "
        assert '[action] write_file {"path": "greeting.txt", "content": "hello"} ' + asked in question
        await admin.send("yes")
        assert "Wrote 5 bytes to greeting.txt" in await user.expect("> ")
        assert ((await user.finish())[0], (await admin.finish())[0]) == (0, 0)
    assert (subject_workspace(server.settings.workspace, "alice") / "greeting.txt").read_text() == "hello"


async def test_token_from_the_environment(server: RunningServer) -> None:
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), "/quit\n")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("session ") and done.stderr == b""


async def test_refused_token_exits_1_with_a_message(server: RunningServer) -> None:
    with trio.fail_after(15):
        done = await _run_chat(_argv(server, token="not-a-jwt"), "hello\n")
    err = done.stderr.decode()
    assert done.returncode == 1
    assert err.startswith("sconnect chat: the server refused the token (HTTP 401)")
    assert "Traceback" not in err and done.stdout == b""


async def test_unreachable_server_exits_1_without_traceback(server: RunningServer) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        argv = [sys.executable, "-m", "engine", "chat", "--url", f"ws://127.0.0.1:{port}/"]
        with trio.fail_after(15):
            done = await _run_chat(Command(argv, _env(server.token())), "hello\n")
    err = done.stderr.decode()
    assert done.returncode == 1
    assert err.startswith(f"sconnect chat: cannot reach ws://127.0.0.1:{port}/")
    assert "Traceback" not in err


async def test_end_of_input_closes_cleanly(server: RunningServer, nursery: trio.Nursery) -> None:
    with trio.fail_after(15):
        chat = await _open_chat(nursery, _argv(server))
        await chat.expect("> ")
        await chat.send("what is 3*3")
        assert "3*3 = 9" in await chat.expect("> ")
        code, rest = await chat.finish()
    assert code == 0 and "Traceback" not in rest


async def test_approval_takes_only_yes_or_no(server: RunningServer) -> None:
    _write_notes(server, "buy milk\n")
    # A message typed at the question is not a "no": the question is asked again.
    lines = "read notes.txt\nwhat is 2+2\nYES\nread notes.txt\n\n/quit\n"
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), lines)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    question = '[action] read_file {"path": "notes.txt"} level 1 — needs approval by user: approve? [y/N] '
    first, _, second = out.partition("[result] read_file ok")
    assert first.endswith(
        f"{question}what is 2+2\n{ANSWER_AGAIN}\n{question}YES\napproved\n"
    )
    assert "buy milk" in second and "2+2 = 4" not in out
    # An empty line is the [y/N] default: no.
    assert f"{question}\ndenied\n" in second and "[result] read_file denied" in second




async def test_commands_act_while_a_tool_runs(
    start_server: Callable[..., object], config_dir: Path, nursery: trio.Nursery
) -> None:
    marker = unique_marker("1414")
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    assistant = config_dir / "agents.d" / "assistant.yaml"
    text = assistant.read_text().replace("tools: [clock,", "tools: [sleeper, clock,")
    text = text.replace("  rules:\n", "  rules:\n    - match: 'nap'\n      tool: sleeper\n      answer: rested\n", 1)
    assistant.write_text(text)
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    with trio.fail_after(20):
        chat = await _open_chat(nursery, _argv(server))
        await chat.expect("> ")
        await chat.send("take a nap")
        await chat.expect("[action] sleeper {} level 0\n")
        await until_running(marker)
        # A message is not sent while the turn runs; the server refuses to pause a busy session.
        await chat.send("what is 2+2")
        await chat.expect("a turn is running; wait for the answer or /stop it\n")
        await chat.send("/pause")
        await chat.expect("[error invalid_state] cannot pause a session that is tool_use")
        await chat.send("/tools")
        await chat.expect("tools you may call directly (tool_call):\n")
        # /stop cancels the turn, not the session: the tool dies, the next message works.
        await chat.send("/stop")
        stopped = await chat.expect("[turn cancelled]\n")
        assert "[result] sleeper cancelled: cancelled while running\n" in stopped
        await until_gone(marker)
        await chat.send("what is 2+2")
        await chat.expect("2+2 = 4\n> ")
        await chat.send("/end")
        await chat.expect("[state] terminated\nthe session is over\n")
        code, rest = await chat.finish()
    assert code == 0 and "rested" not in rest
    await until_gone(marker)


async def test_stop_when_idle_says_no_turn_runs(server: RunningServer) -> None:
    with trio.fail_after(15):
        done = await _run_chat(_argv(server), "/stop\nwhat is 1+1\n")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "[error invalid_state] no turn is running to cancel (the session is active)\n" in out
    assert "1+1 = 2" in out and "terminated" not in out


async def test_server_shutdown_says_how_to_resume(config_dir: Path, state_dir: Path, nursery: trio.Nursery) -> None:
    settings = ServerSettings(config_dir=config_dir, state_dir=state_dir, auth=AuthSettings(secret=SECRET), port=0)
    with trio.fail_after(15):
        async with trio.open_nursery() as server_nursery:
            handle = await server_nursery.start(serve, settings)
            argv = [sys.executable, "-m", "engine", "chat", "--url", handle.websocket, "--reconnect", "0"]
            token = issue(settings.auth, "alice", ["user"], 600)
            chat = await _open_chat(nursery, Command(argv, _env(token)), stderr=subprocess.PIPE)
            session_id = (await chat.expect("> ")).split()[1]
            server_nursery.cancel_scope.cancel()
        code, _, errors = await chat.ended()
    assert code == 1
    assert errors == f"sconnect chat: the server closed the connection; resume later with --session {session_id}\n"


async def test_token_expiry_says_to_get_a_new_one(server: RunningServer, nursery: trio.Nursery) -> None:
    """The token must live until the chat has started its session and die after. Starting Python
    takes seconds on a loaded machine, so a token that died first (refused at the handshake, or
    closed before the session started) is tried again with twice the life, until one outlives the
    start-up: the outcome waited for is an event, whatever the machine's speed."""
    ttl_s = 2.0
    with trio.fail_after(120):
        for _attempt in range(6):
            chat = await _open_chat(nursery, _argv(server, token=server.token(ttl_s=ttl_s)), stderr=subprocess.PIPE)
            code, out, errors = await chat.ended()
            assert code == 1, errors
            if out.startswith("session "):
                session_id = out.split()[1]
                assert errors == (
                    f"sconnect chat: your token expired; get a new one and resume with --session {session_id}\n"
                )
                return
            # Expired before the session started: said so, then tried with a longer life.
            refused = errors.startswith("sconnect chat: the server refused the token (HTTP 401): ")
            assert (refused and "the token has expired" in errors) or (
                errors == "sconnect chat: your token expired; get a new one\n"
            ), errors
            ttl_s *= 2
    pytest.fail("no token outlived the chat's start-up")


# --- the token on the command line -------------------------------------------------------------


async def test_token_on_the_command_line_warns_once(server: RunningServer) -> None:
    command = _argv(server, "--token", server.token())
    del command.env["SCONNECT_TOKEN"]
    with trio.fail_after(15):
        done = await _run_chat(command, "what is 1+1\n")
    assert done.returncode == 0
    assert done.stderr.decode() == (
        "sconnect chat: warning: --token puts the token in the process list, readable by every local user; "
        "set SCONNECT_TOKEN or use --token-file FILE instead\n"
    )
    assert "1+1 = 2" in done.stdout.decode()


async def test_token_file(server: RunningServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(server.token() + "\n")
    command = _argv(server, "--token-file", str(token_file))
    del command.env["SCONNECT_TOKEN"]
    with trio.fail_after(15):
        done = await _run_chat(command, "what is 1+1\n")
        missing = await _run_chat(Command([*command.argv[:-1], str(tmp_path / "none")], command.env), "")
        token_file.write_text("two tokens\n")
        garbled = await _run_chat(command, "")
        nothing = await _run_chat(Command(command.argv[:-2], command.env), "")
    assert (done.returncode, done.stderr) == (0, b"") and "1+1 = 2" in done.stdout.decode()
    assert missing.returncode == 2 and missing.stderr.decode().startswith(
        f"sconnect chat: cannot read --token-file {tmp_path / 'none'}: "
    )
    assert garbled.returncode == 2 and garbled.stderr.decode() == (
        f"sconnect chat: --token-file {token_file} must hold one token\n"
    )
    assert nothing.returncode == 2 and nothing.stderr.decode() == (
        "sconnect chat: no token: set SCONNECT_TOKEN or pass --token-file FILE\n"
    )


# --- direct calls, reads and approvals -----------------------------------------------------------


async def test_call_shows_the_result_readably_and_refuses_bad_input(server: RunningServer) -> None:
    lines = "\n".join([
        '/call calculator {"expression": "6*7"}',
        "/call calculator {bad json",
        "/call calculator [1, 2]",
        "/call calculatr {}",
        '/call calculator {"formula": 1}',
        "/call",
        "/quit",
    ]) + "\n"
    with trio.fail_after(20):
        done = await _run_chat(_argv(server), lines)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    usage = 'usage: /call TOOL {json arguments}, e.g. /call calculator {"expression": "2+2"}'
    assert '[action] calculator {"expression": "6*7"} level 0\n' in out
    assert "[result] calculator ok\n  expression: 6*7\n  result: 42\n" in out
    assert ("the arguments are not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
            + usage + "\n") in out
    assert f"the arguments must be a JSON object, not list; {usage}\n" in out
    assert "no tool named 'calculatr' (did you mean 'calculator'? known: " in out and "; /tools lists them\n" in out
    assert "[result] calculator error: invalid arguments (" in out and "formula" in out
    assert out.count(usage) == 3


async def test_call_of_a_level_1_tool_asks_first(server: RunningServer) -> None:
    _write_notes(server, "first line\nsecond line\n")
    with trio.fail_after(20):
        done = await _run_chat(_argv(server), '/call read_file {"path": "notes.txt"}\ny\n/quit\n')
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    question = '[action] read_file {"path": "notes.txt"} level 1 — needs approval by user: approve? [y/N] '
    assert question + "y\napproved\n" in out
    result = out.split("[result] read_file ok\n", 1)[1]
    # The file's text as text, not as an escaped JSON string.
    assert "first line\n" in result and "second line\n" in result and "\\n" not in result


async def test_read_shows_text_and_escapes_control_characters(server: RunningServer) -> None:
    documents = server.settings.config_dir / "resources.d" / "data" / "documents"
    (documents / "evil.md").write_text("title\n\x1b[2Jcleared?\n")
    lines = "/read file://local/documents/evil.md\n/read file://local/secrets/x\n/read\n/quit\n"
    with trio.fail_after(20):
        done = await _run_chat(_argv(server), lines)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "[resource] file://local/documents/evil.md (text/markdown)\n  title\n  \\x1b[2Jcleared?\n" in out
    assert "\x1b" not in out
    assert "[error forbidden]" in out
    assert "usage: /read URI, e.g. /read file://workspace/notes.txt\n" in out


async def test_admin_lists_approves_and_denies_by_id(server: RunningServer, nursery: trio.Nursery) -> None:
    from engine.client import open_client
    from engine.protocol import AgentResult, ToolCall

    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            for name in ("one", "two"):
                arguments = {"path": f"{name}.txt", "content": name}
                await alice.send(ToolCall(id=name, name="write_file", arguments=arguments))
            listed: list[str] = []
            async with open_client(server.url, server.token("root", ("admin",))) as probe:
                while len(listed) < 2:  # both recorded as pending before the chat starts
                    listed = [a.action_id for a in (await probe.list_actions()).actions]
            admin = await _open_chat(nursery, _argv(server, token=server.token("root", ("admin",))))
            await admin.expect("approve? [y/N] ")
            await admin.send("/pending")
            pending = await admin.expect("approve? [y/N] ")
            assert "2 action(s) wait for your answer (/approve ID, /deny ID reason):\n" in pending
            assert pending.count("— requested by alice (a direct tool call), approver admin, expires in ") == 2
            by_path = {
                line.split('"path": "')[1].split('"')[0]: line.split()[0]
                for line in pending.splitlines() if line.startswith("  ") and "write_file" in line
            }
            assert set(by_path) == {"one.txt", "two.txt"}
            await admin.send(f"/approve {by_path['one.txt']}")
            await admin.expect("approved\n")
            await admin.send(f"/deny {by_path['two.txt']} not today")
            await admin.expect("denied\n")
            await admin.send("/approve 0123456789abcdef")
            # Not an action the chat has seen: it says it asked, never that it approved.
            await admin.expect("sent: approve 0123456789abcdef\n")
            await admin.expect("[error not_found] no action '0123456789abcdef' is waiting for approval\n")
            await admin.send("/deny")
            await admin.expect("usage: /deny ID [reason]")
            results = {}
            while len(results) < 2:
                result = await alice.next_event_of(AgentResult)
                results[result.reply_to] = result
            assert str(results["one"].status) == "ok"
            denied = results["two"]
            assert (str(denied.status), denied.output["error"]) == ("denied", "denied by root: not today")
            code, _ = await admin.finish()
    assert code == 0
    alices = subject_workspace(server.settings.workspace, "alice")
    assert (alices / "one.txt").read_text() == "one"
    assert not (alices / "two.txt").exists()


async def test_a_question_answered_by_another_admin_is_withdrawn(server: RunningServer, nursery: trio.Nursery) -> None:
    from engine.client import open_client
    from engine.protocol import AgentAction, ToolCall

    with trio.fail_after(30):
        admin = await _open_chat(nursery, _argv(server, token=server.token("root", ("admin",))))
        await admin.expect("> ")
        async with open_client(server.url, server.token("alice")) as alice, \
                open_client(server.url, server.token("other-admin", ("admin",))) as other:
            await alice.send(ToolCall(id="w", name="write_file", arguments={"path": "w.txt", "content": "w"}))
            question = await admin.expect("approve? [y/N] ")
            assert "(requested by alice, a direct tool call)" in question
            seen = await other.next_event_of(AgentAction)
            await other.answer(seen.action_id, True)
            withdrawn = await admin.expect("answered by another admin, cancelled or expired\n")
            assert f"[action] write_file ({seen.action_id[:8]}) no longer waits for your answer" in withdrawn
            await admin.expect("> ")
        code, _ = await admin.finish()
    assert code == 0


async def test_json_mode_writes_one_object_per_event(server: RunningServer) -> None:
    import json

    with trio.fail_after(20):
        done = await _run_chat(_argv(server, "--json"), 'what is 2+2\n/call calculator {"expression": "1+1"}\n/quit\n')
    assert done.returncode == 0, done.stderr.decode()
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert events[0]["type"] == "chat" and events[0]["event"] == "session"
    types = [event["type"] for event in events]
    assert {"tool_list", "agent_action", "agent_result", "response_token", "agent_response"} <= set(types)
    answer = next(event for event in events if event["type"] == "agent_response")
    assert answer["payload"]["content"] == "2+2 = 4"
    call = [event for event in events if event["type"] == "agent_result" and event["payload"].get("reply_to")]
    assert call[0]["payload"]["output"] == {"expression": "1+1", "result": 2}


# --- connections ---------------------------------------------------------------------------------


async def test_wss_with_a_private_ca_needs_cacert(
    start_server: Callable[..., object], config_dir: Path, tmp_path: Path
) -> None:
    from tests.engine.tls import self_signed

    cert, key = self_signed(tmp_path)
    server: RunningServer = await start_server(config_dir, tls_cert=cert, tls_key=key)  # type: ignore[operator]
    with trio.fail_after(20):
        refused = await _run_chat(_argv(server), "what is 1+1\n")
        trusted = await _run_chat(_argv(server, "--cacert", str(cert)), "what is 1+1\n")
    assert refused.returncode == 1 and refused.stdout == b""
    assert refused.stderr.decode() == (
        f"sconnect chat: cannot reach {server.url}: TLS: certificate verify failed (self-signed certificate); "
        "pass its CA with --cacert FILE\n"
    )
    assert trusted.returncode == 0, trusted.stderr.decode()
    assert "1+1 = 2" in trusted.stdout.decode()


async def test_the_chat_reconnects_to_a_restarted_server_and_resumes(
    config_dir: Path, state_dir: Path, nursery: trio.Nursery
) -> None:
    settings = ServerSettings(config_dir=config_dir, state_dir=state_dir, auth=AuthSettings(secret=SECRET), port=0)
    token = issue(settings.auth, "alice", ["user"], 600)
    with trio.fail_after(60):
        async with trio.open_nursery() as first:
            handle = await first.start(serve, settings)
            argv = [sys.executable, "-m", "engine", "chat", "--url", handle.websocket]
            chat = await _open_chat(nursery, Command(argv, _env(token)))
            session_id = (await chat.expect("> ")).split()[1]
            await chat.send("what is 1+1")
            await chat.expect("1+1 = 2\n> ")
            first.cancel_scope.cancel()
        await chat.expect("reconnecting in 0.5s (attempt 1 of 5)\n")
        port = int(handle.websocket.rsplit(":", 1)[1].split("/")[0])
        async with trio.open_nursery() as second:
            await second.start(serve, attrs.evolve(settings, port=port))
            await chat.expect(f"[connection] reconnected; session {session_id} resumed (active)\n")
            await chat.send("what is 2+3")
            await chat.expect("2+3 = 5\n> ")
            code, _ = await chat.finish()
            second.cancel_scope.cancel()
    assert code == 0


async def test_the_chat_gives_up_after_its_reconnection_attempts(
    config_dir: Path, state_dir: Path, nursery: trio.Nursery
) -> None:
    settings = ServerSettings(config_dir=config_dir, state_dir=state_dir, auth=AuthSettings(secret=SECRET), port=0)
    with trio.fail_after(30):
        async with trio.open_nursery() as server_nursery:
            handle = await server_nursery.start(serve, settings)
            argv = [sys.executable, "-m", "engine", "chat", "--url", handle.websocket, "--reconnect", "2"]
            chat = await _open_chat(nursery, Command(argv, _env(issue(settings.auth, "alice", ["user"], 600))),
                                    stderr=subprocess.PIPE)
            session_id = (await chat.expect("> ")).split()[1]
            server_nursery.cancel_scope.cancel()
        code, out, errors = await chat.ended()
    assert code == 1
    assert "reconnecting in 0.5s (attempt 1 of 2)\n" in out and "reconnecting in 1s (attempt 2 of 2)\n" in out
    assert errors.startswith("sconnect chat: cannot reach the server (")
    assert errors.endswith(f"); resume later with --session {session_id} (gave up after 2 reconnection attempts)\n")


# --- at a terminal -------------------------------------------------------------------------------


@attrs.define(eq=False)
class TerminalChat:
    """A chat on a pseudo-terminal that is its controlling terminal, as in a real shell."""

    process: trio.Process
    terminal: trio.lowlevel.FdStream
    seen: bytes = b""

    @classmethod
    async def open(cls, server: RunningServer, **env: str) -> TerminalChat:
        master, slave = os.openpty()
        argv = [sys.executable, "-m", "engine", "chat", "--url", server.url]
        process = await trio.lowlevel.open_process(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, start_new_session=True,
            preexec_fn=_take_terminal,
            env={**_env(server.token()), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", **env},
        )
        os.close(slave)
        return cls(process, trio.lowlevel.FdStream(master))

    async def send(self, keys: bytes) -> None:
        await self.terminal.send_all(keys)

    async def expect(self, text: bytes) -> bytes:
        """Read until ``text`` appears; what came before it, and it."""
        with trio.move_on_after(15) as waited:
            while text not in self.seen:
                try:
                    chunk = await self.terminal.receive_some()
                except OSError:  # EIO: the chat closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the chat ended before printing {text!r}: {self.seen!r}")
                self.seen += chunk
        if waited.cancelled_caught:
            raise AssertionError(f"no {text!r} within 15 s: {self.seen!r}")
        before, self.seen = self.seen.split(text, 1)
        return before + text

    async def aclose(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self.terminal.aclose()


def _take_terminal() -> None:
    """In the child, a session leader: make its stdin (the pty) its controlling terminal."""
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.parametrize("no_color", [False, True])
async def test_at_a_terminal_lines_are_edited_and_output_coloured(server: RunningServer, no_color: bool) -> None:
    """The chat on a pseudo-terminal: prompt_toolkit reads the lines (editing keys work), colour
    unless NO_COLOR."""
    chat = await TerminalChat.open(server, **({"NO_COLOR": "1"} if no_color else {}))
    try:
        with trio.fail_after(30):
            await chat.expect(b"anything else is a message to the agent\r\n")
            # Typed with a mistake, fixed with backspace: the line as edited is what is sent.
            await chat.send(b"what is 2+3\x7f2\r")
            await chat.expect(b'calculator {"expression": "2+2"}')
            # The answer streams in pieces, and the prompt may be redrawn between them: wait
            # for its last piece, not for the whole line in one run of bytes.
            await chat.expect(b"[result] calculator ok")
            await chat.expect(b" 4\r\n")
            await chat.send(b'/call calculator {"expression": "3*3"}\r')
            shown = await chat.expect(b"result: 9")
            assert (b"\x1b[33m[action]\x1b[0m" in shown) is not no_color
            assert (b"\x1b[32m[result] calculator ok\x1b[0m" in shown) is not no_color
            await chat.send(b"/quit\r")
            assert await chat.process.wait() == 0
    finally:
        await chat.aclose()


async def test_ctrl_c_stops_the_turn_then_leaves(
    start_server: Callable[..., object], config_dir: Path
) -> None:
    """Ctrl-C while a tool runs cancels the turn (the tool dies, the session stays); Ctrl-C at an
    idle prompt leaves with 130."""
    marker = unique_marker("1732")
    (config_dir / "tools.d" / "sleeper.yaml").write_text(SLEEPER.format(marker=marker))
    assistant = config_dir / "agents.d" / "assistant.yaml"
    text = assistant.read_text().replace("tools: [clock,", "tools: [sleeper, clock,")
    text = text.replace("  rules:\n", "  rules:\n    - match: 'nap'\n      tool: sleeper\n      answer: rested\n", 1)
    assistant.write_text(text)
    server: RunningServer = await start_server(config_dir)  # type: ignore[operator]
    chat = await TerminalChat.open(server, NO_COLOR="1")
    try:
        with trio.fail_after(30):
            await chat.expect(b"anything else is a message to the agent\r\n")
            await chat.send(b"take a nap\r")
            await chat.expect(b"[action] sleeper {} level 0")
            await until_running(marker)
            await chat.send(b"\x03")
            await chat.expect(b"[turn cancelled]")
            await until_gone(marker)
            await chat.send(b"what is 2+2\r")
            await chat.expect(b"2+2 = 4")
            await chat.send(b"\x03")
            assert await chat.process.wait() == 130
    finally:
        await chat.aclose()


@attrs.define(eq=False)
class CuttableProxy:
    """A TCP forwarder to the server whose connections the test can cut (a network blip)."""

    target_port: int
    port: int = 0
    _scopes: list[trio.CancelScope] = attrs.field(factory=list)
    # Set: the connections open now stop forwarding but stay open (a silent network).
    _frozen: list[trio.Event] = attrs.field(factory=list)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target_port) as upstream:
            with trio.CancelScope() as scope:
                self._scopes.append(scope)
                frozen = trio.Event()
                self._frozen.append(frozen)

                async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                    async for chunk in source:
                        if frozen.is_set():
                            continue  # swallowed: nothing gets through, nothing is closed
                        await sink.send_all(chunk)
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pipe, client, upstream)
                    nursery.start_soon(pipe, upstream, client)

    def freeze(self) -> None:
        """The connections open now go silent in both directions, without closing."""
        for frozen in self._frozen:
            frozen.set()
        self._frozen.clear()

    def cut(self) -> None:
        """Drop every connection now open (both ends see it closed without a close frame)."""
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()


async def test_after_a_network_cut_the_chat_asks_again_what_waits(server: RunningServer, nursery: trio.Nursery) -> None:
    from engine.client import open_client
    from engine.protocol import AgentResult, ToolCall

    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    proxy = CuttableProxy(port)
    await nursery.start(proxy.run)
    command = _argv(server, token=server.token("root", ("admin",)))
    command.argv[command.argv.index(server.url)] = server.url.replace(str(port), str(proxy.port))
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as alice:
            admin = await _open_chat(nursery, command)
            session_id = (await admin.expect("> ")).split()[1]
            await alice.send(ToolCall(id="w", name="write_file", arguments={"path": "cut.txt", "content": "x"}))
            await admin.expect("(requested by alice, a direct tool call) — needs approval by admin: approve? [y/N] ")
            proxy.cut()
            await admin.expect("reconnecting in 0.5s (attempt 1 of 5)\n")
            await admin.expect(f"[connection] reconnected; session {session_id} resumed (active)\n")
            await admin.expect("[connection] 1 action(s) still wait for your answer\n")
            await admin.expect("(requested by alice, a direct tool call) — needs approval by admin: approve? [y/N] ")
            await admin.send("y")
            await admin.expect("approved\n")
            result = await alice.next_event_of(AgentResult)
            assert (result.reply_to, str(result.status)) == ("w", "ok")
            code, _ = await admin.finish()
    assert code == 0
    assert (subject_workspace(server.settings.workspace, "alice") / "cut.txt").read_text() == "x"


async def test_a_mistyped_agent_gets_a_suggestion(server: RunningServer) -> None:
    with trio.fail_after(15):
        done = await _run_chat(_argv(server, "--agent", "asistant"), "hello\n")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode() == (
        "sconnect chat: cannot start agent 'asistant': [not_found] no agent named 'asistant' "
        "(did you mean 'assistant'? known: assistant, bookkeeper, planner, weather)\n"
    )


async def test_a_connection_gone_silent_is_noticed_by_its_pings(server: RunningServer, nursery: trio.Nursery) -> None:
    """The network stops carrying anything, TCP stays open: the chat's unanswered ping ends the
    connection and it reconnects, resuming its session."""
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    proxy = CuttableProxy(port)
    await nursery.start(proxy.run)
    command = _argv(server, "--keepalive", "0.5")
    command.argv[command.argv.index(server.url)] = server.url.replace(str(port), str(proxy.port))
    with trio.fail_after(30):
        chat = await _open_chat(nursery, command)
        session_id = (await chat.expect("> ")).split()[1]
        proxy.freeze()
        await chat.expect(
            "[connection] the connection was lost (the server did not answer a ping within 0.5s); reconnecting in 0.5s"
        )
        await chat.expect(f"[connection] reconnected; session {session_id} resumed (active)\n")
        await chat.send("what is 4*5")
        await chat.expect("4*5 = 20\n")
        code, _ = await chat.finish()
    assert code == 0


async def test_approve_takes_a_prefix_of_an_action_this_chat_never_saw(server: RunningServer,
                                                                        nursery: trio.Nursery) -> None:
    """An action asked on another connection of the same user (another chat, an MCP client):
    /approve with the prefix /pending elsewhere showed finds it in the server's list."""
    from engine.client import open_client
    from engine.protocol import AgentAction, AgentResult, ToolCall

    _write_notes(server, "buy milk\n")
    with trio.fail_after(30):
        async with open_client(server.url, server.token("alice")) as other:
            await other.send(ToolCall(id="elsewhere", name="read_file", arguments={"path": "notes.txt"}))
            action = await other.next_event_of(AgentAction)
            chat = await _open_chat(nursery, _argv(server))
            await chat.expect("> ")
            await chat.send(f"/approve {action.action_id[:8]}")
            await chat.expect("approved\n")
            result = await other.next_event_of(AgentResult)
            await chat.send("/quit")
            code, _ = await chat.finish()
    assert code == 0 and str(result.status) == "ok" and "buy milk" in str(result.output)
