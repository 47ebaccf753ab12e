"""Durable engine state: sessions and their history, pending approvals, grants, memories,
turns and ratings, console sign-ins.

SQLite in the state directory by default (:meth:`Store.open`); PostgreSQL, shared by
several instances, when a ``postgresql://`` database URL is configured
(:meth:`Store.connect`). :func:`open_store` picks by configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..audit._pgdb import COMPONENT as _AUDIT_COMPONENT
from ..audit._pgdb import MIGRATIONS as _AUDIT_MIGRATIONS
from ._grants import GRANT_STATUSES as GRANT_STATUSES
from ._grants import GrantRecord as GrantRecord
from ._learning import MemoryQuotaError as MemoryQuotaError
from ._learning import MemoryRecord as MemoryRecord
from ._learning import Rating as Rating
from ._learning import TurnRecord as TurnRecord
from ._model import ACTION_STATUSES as ACTION_STATUSES
from ._model import SCHEMA_VERSION as SCHEMA_VERSION
from ._model import ConsoleSessionRecord as ConsoleSessionRecord
from ._model import DuplicateError as DuplicateError
from ._model import PendingAction as PendingAction
from ._model import SchemaVersionError as SchemaVersionError
from ._model import SessionRecord as SessionRecord
from ._model import StoreClosedError as StoreClosedError
from ._model import StoreError as StoreError
from ._model import StoreUnavailableError as StoreUnavailableError
from ._model import UnknownSessionError as UnknownSessionError
from ._model import redact_tool_calls as redact_tool_calls
from ._pg import COMPONENT as _PG_COMPONENT
from ._pg import MIGRATIONS as _PG_MIGRATIONS
from ._store import Store as Store

#: What ``sconnect db migrate`` migrates on PostgreSQL: (component, its migrations). The
#: audit log's tables live in the same database (engine.audit._pgdb).
PG_COMPONENTS = ((_PG_COMPONENT, _PG_MIGRATIONS), (_AUDIT_COMPONENT, _AUDIT_MIGRATIONS))


async def open_store(database: str | os.PathLike[str], database_url: str | None, *,
                     digest_key: bytes | None = None, instance: str | None = None) -> Store:
    """PostgreSQL at ``database_url`` when one is given (``instance``: this server's id
    among those sharing it), else the SQLite file ``database``."""
    if database_url:
        return await Store.connect(database_url, digest_key=digest_key, instance=instance)
    return await Store.open(Path(database), digest_key=digest_key)


def instance_id(state_dir: str | os.PathLike[str]) -> str:
    """This server's id among those sharing a database: random, kept in
    ``<state_dir>/instance-id`` so that it survives restarts (blocking: call at start).
    Raises :class:`StoreError` when the file holds something else."""
    import secrets

    path = Path(state_dir) / "instance-id"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text("ascii", errors="replace").strip()
        if not text or len(text) > 64 or not text.isalnum():
            raise StoreError(f"{path}: not an instance id (delete it to get a new one)") from None
        return text
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(8) + "\n")
    return path.read_text("ascii").strip()
