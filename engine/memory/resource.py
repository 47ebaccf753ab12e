"""``memory://NAME``: what agents remember about the reader, read under policy and audit.

A resources.d/ file with ``scheme: memory`` declares the host; an agent with
``memory: on`` lists it in its ``resources``.  What a read returns depends on who
reads (the :class:`~engine.resources.Reader` the action path passes), never on the
URI alone, so one subject can never name their way into another's memory:

- ``memory://NAME``: the reader's memories, one per line (``- [ID] fact``); of the
  reading agent when an agent reads, of every agent when a client reads directly;
- ``memory://NAME/ID``: one of the reader's memories, as plain text (``not_found``
  when the id is not theirs, exactly as when it does not exist).

Memories past their agent's ``memory.retention`` are not served.  The host never
writes: the ``remember`` and ``forget`` tools do (engine/memory/tools.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import attrs

from ..config.model import Config, Source
from ..config.resource_kinds import ResourceKind, register
from ..config.yamldoc import Document
from ..errors import ConfigProblem
from ..resources.content import Content, Template
from ..resources.errors import NotFound, Refused
from ..resources.host import HostContext, Reader
from ..resources.uri import ResourceURI


@attrs.frozen
class MemoryResource:
    """``memory://NAME[/ID]``: the reader's own memories, per agent."""

    scheme: Literal["memory"]
    name: str
    description: str
    source: Source = Source()


SCHEMA: dict[str, object] = {"properties": {}}


def check(resource: MemoryResource, doc: Document, root: Path) -> list[ConfigProblem]:
    return []


def build(resource: MemoryResource, context: HostContext) -> MemoryHost:
    return MemoryHost(resource, context.config)


def cutoff(config: Config, agent: str, now: float) -> float | None:
    """The oldest creation time still kept for ``agent``'s memories (None: no retention)."""
    declared = config.agents.get(agent)
    if declared is None or declared.memory.retention is None:
        return None
    return now - float(declared.memory.retention)


class MemoryHost:
    def __init__(self, config: MemoryResource, whole: Config) -> None:
        self.config = config
        self.whole = whole
        self.key = f"memory://{config.name}"

    def templates(self) -> list[Template]:
        return [
            Template(self.key, f"{self.config.description} (the reader's own memories)", self.key),
            Template(f"{self.key}/{{id}}", "One of the reader's memories, by id", self.key),
        ]

    async def read(self, uri: ResourceURI) -> Content:
        raise Refused(f"{self.key} is read only on behalf of someone")

    async def read_as(self, uri: ResourceURI, reader: Reader) -> Content:
        if len(uri.segments) > 1:
            raise NotFound(f"{uri}: a memory URI is {self.key} or {self.key}/ID")
        now = time.time()
        records = [
            record for record in await reader.store.memories(reader.subject, reader.agent)
            if (limit := cutoff(self.whole, record.agent, now)) is None or record.created_at >= limit
        ]
        if uri.segments:
            wanted = uri.segments[0]
            for record in records:
                if record.memory_id == wanted:
                    return Content(str(uri), "text/plain", record.content, False)
            raise NotFound(f"{uri}: no such memory of yours")
        lines = [
            f"- [{record.memory_id}] {record.content}" + ("" if reader.agent else f" (agent {record.agent})")
            for record in records
        ]
        return Content(str(uri), "text/plain", "\n".join(lines) if lines else "(nothing remembered)", False)


KIND = register(ResourceKind("memory", MemoryResource, SCHEMA, check, build, scheme="memory"))
