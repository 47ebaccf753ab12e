"""``db://NAME/path``: named, parameterised SELECTs over a SQLite file opened read-only.

The path picks a query by its template (``profile/{id}``); the placeholders'
values are typed and BOUND as parameters, never interpolated into SQL.  The
connection is opened ``mode=ro`` with ``query_only`` on, so even a template
written carelessly cannot write.  Rows come back as JSON objects, at most
``max_rows`` of them (``truncated`` says when there were more).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import trio

from ..config.bounds import within
from ..config.model import DbResource
from ..config.resource_kinds import ResourceKind, register
from ..config.yamldoc import Document
from ..errors import ConfigProblem
from .content import Content, Template
from .errors import Unavailable
from .host import HostContext
from .templates import check_template, host_templates, route_for
from .uri import ResourceURI

SCHEMA = {
    "required": ["database", "queries"],
    "properties": {
        "database": {"type": "string", "minLength": 1,
                     "description": "SQLite file, opened read-only; relative to the state directory or absolute."},
        "seed": {"type": "string", "description": "SQL file (relative to the config directory) that creates the "
                 "database when it does not exist. Default: none."},
        "max_rows": {"type": "integer", "minimum": 1, "maximum": 10000,
                     "description": "Rows returned at most. Default: 100."},
        "queries": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False, "required": ["path", "sql"],
                "properties": {
                    "path": {"type": "string", "minLength": 1, "description": "Path template, e.g. profile/{id}."},
                    "sql": {"type": "string", "pattern": "^\\s*(?i:select|with)\\b",
                            "description": "A SELECT with :name parameters, bound, never interpolated."},
                    "description": {"type": "string"},
                    "params": {"$ref": "common.json#/$defs/param_types"},
                },
            },
        },
    },
}


def check(resource: DbResource, doc: Document, root: Path) -> list[ConfigProblem]:
    problems = []
    if ".." in Path(resource.database).parts:
        problems.append(doc.problem(["database"], f"{resource.database!r} must not climb out with '..'"))
    if resource.seed is not None:
        seed = root / resource.seed
        if Path(resource.seed).is_absolute() or ".." in Path(resource.seed).parts:
            problems.append(doc.problem(
                ["seed"], f"{resource.seed!r} must be relative to the configuration directory, without '..'"
            ))
        elif not seed.is_file():
            problems.append(doc.problem(["seed"], f"seed file {resource.seed!r} does not exist"))
        # The directory the seed sits under (resources.d/) may itself be a link the operator made.
        elif not within(seed, root, root / Path(resource.seed).parts[0]):
            problems.append(doc.problem(["seed"], f"seed file {resource.seed!r} is a symbolic link leading "
                                                  "outside the configuration directory: refused, not read"))
    for index, query in enumerate(resource.queries):
        used = set(re.findall(r":(\w+)", query.sql))
        problems += check_template(doc, ["queries", index], query.path, query.params, used)
    return problems


def build(resource: DbResource, context: HostContext) -> DbHost:
    return DbHost(resource, context.config_root, context.state_dir)


class DbHost:
    def __init__(self, config: DbResource, config_root: Path, state_dir: Path) -> None:
        self.config = config
        self.database = state_dir / config.database
        self.seed = config_root / config.seed if config.seed else None

    def templates(self) -> list[Template]:
        return host_templates(f"db://{self.config.name}", self.config.queries, self.config.description)

    async def read(self, uri: ResourceURI) -> Content:
        query, values = route_for(uri.key, self.config.queries, uri.segments)
        rows, truncated = await trio.to_thread.run_sync(self._select, query.sql, values)
        return Content(str(uri), "application/json", json.dumps(rows, ensure_ascii=False, default=str), truncated)

    def _select(self, sql: str, values: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        self._ensure_seeded()
        try:
            conn = sqlite3.connect(f"{self.database.as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise Unavailable(f"db://{self.config.name}: cannot open the database: {exc}") from None
        try:
            conn.execute("PRAGMA query_only = ON")
            cursor = conn.execute(sql, values)
            names = [column[0] for column in cursor.description or ()]
            fetched = cursor.fetchmany(self.config.max_rows + 1)
        except sqlite3.Error as exc:
            raise Unavailable(f"db://{self.config.name}: the query failed: {exc}") from None
        finally:
            conn.close()
        rows = [dict(zip(names, row, strict=True)) for row in fetched[: self.config.max_rows]]
        return rows, len(fetched) > self.config.max_rows

    def _ensure_seeded(self) -> None:
        """Create the database from its seed SQL the first time it is read (the shipped example)."""
        if self.database.exists() or self.seed is None:
            return
        script = self.seed.read_text(encoding="utf-8")
        partial = self.database.with_name(self.database.name + ".seeding")
        partial.unlink(missing_ok=True)
        with sqlite3.connect(partial) as conn:
            conn.executescript(script)
        conn.close()
        os.replace(partial, self.database)


KIND = register(ResourceKind("db", DbResource, SCHEMA, check, build, scheme="db"))
