"""``sconnect chat`` as a real subprocess against a real server (shipped configuration):
``/memory`` lists and forgets, ``/good`` and ``/bad`` rate the last answer, and their
mistakes (nothing to rate yet, a bad ``/memory`` line, an id that is not yours) are said."""

from __future__ import annotations

import pytest
import trio

from engine.client import open_client
from engine.protocol import MemoryListRequest, new_id
from tests.engine.conftest import RunningServer
from tests.engine.test_chat_cli import _argv, _open_chat

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_memory_and_ratings_from_the_chat(server: RunningServer, nursery: trio.Nursery) -> None:
    with trio.fail_after(60):
        chat = await _open_chat(nursery, _argv(server, "--agent", "assistant"))
        await chat.expect("session ")
        await chat.send("/good")
        await chat.expect("no answer to rate yet in this session")
        await chat.send("remember that I like green tea")
        await chat.expect("I will remember that: I like green tea")
        await chat.expect("> ")  # the turn is over (its agent_response arrived): the prompt is back
        await chat.send("/bad too chatty")
        await chat.expect("[rated] the last answer as bad; thank you")
        await chat.send("/good")
        await chat.expect("[rated] the last answer as good (replacing your earlier rating)")
        await chat.send("/memory")
        listing = await chat.expect("I like green tea")
        assert "1 thing(s) remembered about you" in listing and "assistant" in listing
        await chat.send("/memory forget 0123456789abcdef")
        await chat.expect("[error not_found] no memory '0123456789abcdef' of yours")
        await chat.send("/memory wipe")
        await chat.expect("usage: /memory (list)")
        async with open_client(server.url, server.token("alice")) as alice:
            [memory] = (await alice.request(MemoryListRequest(id=new_id()))).memories  # type: ignore[union-attr]
        await chat.send(f"/memory forget {memory.memory_id[:6]}")
        await chat.expect("[memory] forgot 1 thing(s)")
        await chat.send("/memory")
        await chat.expect("nothing is remembered about you")
        code, _rest = await chat.finish()
    assert code == 0
