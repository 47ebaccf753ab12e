"""The audit log: append-only, hash-chained, checkpointed under a key outside the database.

Every authentication failure, decision, approval, execution, resource read and config
reload becomes one :class:`AuditRecord` in ``<state>/audit.db``, committed before the
action's result is sent. :class:`AuditLog` is the single writer; :func:`verify` checks the
chain and the checkpoints; :func:`tail` and :func:`query` read. ``sconnect audit`` is the
command line over the same functions.

Files in the state directory: ``audit.db`` (0600) and ``audit-checkpoints.log`` (0600, one
signed checkpoint per line). Beside it, in ``<state-dir>-keys/`` (0700): ``audit-key``
(0400, 32 random bytes; ``SCONNECT_AUDIT_KEY_FILE`` puts it elsewhere) and
``audit-head`` (the last checkpoint signed). A writer refuses to continue a log the key
does not vouch for (``_adopt``); :func:`archive` sets such a log aside.

With PostgreSQL (``database_url``), :func:`open_audit` gives a :class:`PgAuditLog`: the
records of every instance go into one chain in the shared database (``_shared`` says how
adoption works with several writers), and :func:`verify_shared` checks it from any host
holding the key. ``archive`` is SQLite-only.
"""

from __future__ import annotations

import os

from ._archive import archive as archive
from ._checkpoints import CHECKPOINT_LOG_NAME as CHECKPOINT_LOG_NAME
from ._checkpoints import HEAD_NAME as HEAD_NAME
from ._checkpoints import Checkpoint as Checkpoint
from ._checkpoints import head_path as head_path
from ._db import AUDIT_DB_NAME as AUDIT_DB_NAME
from ._db import audit_db_path as audit_db_path
from ._errors import AuditAdoptionError as AuditAdoptionError
from ._errors import AuditClosedError as AuditClosedError
from ._errors import AuditError as AuditError
from ._errors import AuditKeyError as AuditKeyError
from ._errors import AuditLockedError as AuditLockedError
from ._errors import AuditNotFoundError as AuditNotFoundError
from ._errors import AuditWriteError as AuditWriteError
from ._keys import KEY_ENV as KEY_ENV
from ._keys import KEY_NAME as KEY_NAME
from ._keys import default_key_path as default_key_path
from ._keys import key_path as key_path
from ._pgverify import verify_shared as verify_shared
from ._pgwriter import PgAuditLog as PgAuditLog
from ._query import parse_time as parse_time
from ._query import query as query
from ._query import tail as tail
from ._record import GENESIS_HASH as GENESIS_HASH
from ._record import KINDS as KINDS
from ._record import REDACTED as REDACTED
from ._record import AuditEvent as AuditEvent
from ._record import AuditRecord as AuditRecord
from ._record import redact as redact
from ._record import scrub as scrub
from ._record import secret_values as secret_values
from ._verify import Problem as Problem
from ._verify import VerifyReport as VerifyReport
from ._verify import verify as verify
from ._writer import AuditLog as AuditLog


def verify_log(log: AuditLog) -> VerifyReport:
    """:func:`verify` of the log a server writes: its state directory's, or the shared one
    in PostgreSQL. Blocking."""
    if isinstance(log, PgAuditLog):
        return log.verify_sync()
    return verify(log.state_dir, key_file=log.key_path)


async def open_audit(state_dir: str | os.PathLike[str], database_url: str | None = None,
                     **options: object) -> AuditLog:
    """The audit log of this server: the shared one in PostgreSQL when ``database_url``
    is given, else ``<state_dir>/audit.db``. ``options`` as :meth:`AuditLog.open`."""
    if database_url:
        return await PgAuditLog.connect(state_dir, database_url, **options)  # type: ignore[arg-type]
    return await AuditLog.open(state_dir, **options)  # type: ignore[arg-type]
