"""The browser console: a page served by the server itself, speaking the same protocol.

Chat, the approval queue (admins), the audit log and its verification (admins and
auditors), over one listener of its own (``serve --console-port``): the page, a small
sign-in that exchanges a token for a session cookie, read-only JSON endpoints, and a
WebSocket bridged to the same connection logic as every other client. Loaded only when
the console is on (hypercorn).
"""

from ._serve import ConsoleHandle as ConsoleHandle
from ._serve import serve_console as serve_console
from ._signin import SignIns as SignIns
