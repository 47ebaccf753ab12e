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
import sqlite3
from pathlib import Path
from typing import Any

import trio

from ..config.model import DbResource
from .content import Content, Template
from .errors import Unavailable
from .templates import host_templates, route_for
from .uri import ResourceURI


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
