"""The WebSocket server: handshake authentication, connections, sessions and the turn loop."""

from .app import ServerHandle as ServerHandle
from .app import serve as serve
from .settings import ServerSettings as ServerSettings
