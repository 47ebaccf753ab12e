"""Many clients at once: each completes its turn, nobody waits for anybody else."""

from __future__ import annotations

import trio

from engine.client import open_client
from tests.engine.conftest import RunningServer

CLIENTS = 200


async def test_200_concurrent_connections_each_complete_a_turn(server: RunningServer) -> None:
    answers: dict[int, str] = {}

    async def one(index: int) -> None:
        async with open_client(server.url, server.token(f"user-{index}")) as client:
            sid = (await client.start_session("assistant")).session_id
            # Every tenth client also runs a sandboxed tool; the rest answer from rules alone.
            question = f"what is {index}*2" if index % 10 == 0 else "hello"
            answers[index] = (await client.converse(sid, question)).response.content

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for index in range(CLIENTS):
                nursery.start_soon(one, index)
    assert len(answers) == CLIENTS
    assert answers[10] == "10*2 = 20"
    assert answers[1].startswith("Hello!")
