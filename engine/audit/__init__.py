"""The audit log: append-only, hash-chained, checkpointed under a key outside the database.

Every authentication failure, decision, approval, execution, resource read and config
reload becomes one :class:`AuditRecord` in ``<state>/audit.db``, committed before the
action's result is sent. :class:`AuditLog` is the single writer; :func:`verify` checks the
chain and the checkpoints; :func:`tail` and :func:`query` read. ``sconnect audit`` is the
command line over the same functions.

Files in the state directory: ``audit.db`` (0600), ``audit-checkpoints.log`` (0600, one
signed checkpoint per line) and ``audit-key`` (0600, 32 random bytes; set
``SCONNECT_AUDIT_KEY_FILE`` to keep it elsewhere).
"""

from ._checkpoints import CHECKPOINT_LOG_NAME as CHECKPOINT_LOG_NAME
from ._checkpoints import KEY_ENV as KEY_ENV
from ._checkpoints import KEY_NAME as KEY_NAME
from ._checkpoints import Checkpoint as Checkpoint
from ._db import AUDIT_DB_NAME as AUDIT_DB_NAME
from ._db import audit_db_path as audit_db_path
from ._errors import AuditClosedError as AuditClosedError
from ._errors import AuditError as AuditError
from ._errors import AuditKeyError as AuditKeyError
from ._errors import AuditLockedError as AuditLockedError
from ._errors import AuditNotFoundError as AuditNotFoundError
from ._errors import AuditWriteError as AuditWriteError
from ._query import parse_time as parse_time
from ._query import query as query
from ._query import tail as tail
from ._record import GENESIS_HASH as GENESIS_HASH
from ._record import KINDS as KINDS
from ._record import REDACTED as REDACTED
from ._record import AuditEvent as AuditEvent
from ._record import AuditRecord as AuditRecord
from ._verify import Problem as Problem
from ._verify import VerifyReport as VerifyReport
from ._verify import verify as verify
from ._writer import AuditLog as AuditLog
