"""PostgreSQL access under Trio: a psycopg 3 pool used from worker threads, cancellable.

``Database`` owns a ``psycopg_pool.ConnectionPool``; :meth:`Database.run` runs a blocking
function on one pooled connection in a worker thread, and turns a Trio cancellation into
a server-side cancel of the running statement. ``migrate`` applies versioned schema
migrations once, under an advisory lock, however many instances start at once. psycopg
is imported only here, and only when a ``postgresql://`` URL is configured.
"""

from ._database import Database as Database
from ._database import PgError as PgError
from ._database import PgUnavailableError as PgUnavailableError
from ._database import connect_once as connect_once
from ._database import describe as describe
from ._database import is_postgres_url as is_postgres_url
from ._migrate import Migration as Migration
from ._migrate import SchemaTooNewError as SchemaTooNewError
from ._migrate import migrate as migrate
from ._migrate import pending as pending
from ._migrate import statements as statements
from ._notify import Notification as Notification
from ._notify import listen as listen
from ._notify import notify as notify
