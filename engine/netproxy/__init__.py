"""Network for tools by destination: an egress proxy per call, and the allowlist it enforces.

A tool whose ``sandbox.network`` is a list runs in its own network namespace whose only
way out is a Unix socket served by `open_call_proxy` (HTTP CONNECT and plain HTTP);
the proxy allows a connection only to a listed name and port, resolves names itself
and connects to the address it checked, and reports every connection as an
`EgressRecord`. The sandbox package sees only the socket's path.
"""

from ._allow import Allowlist as Allowlist
from ._allow import AllowlistError as AllowlistError
from ._allow import Destination as Destination
from ._allow import is_public as is_public
from ._allow import parse_entry as parse_entry
from ._proxy import EgressRecord as EgressRecord
from ._proxy import OnRecord as OnRecord
from ._proxy import ProxyConfig as ProxyConfig
from ._proxy import open_call_proxy as open_call_proxy
from ._request import BadRequest as BadRequest
from ._request import ProxyRequest as ProxyRequest
from ._request import parse_head as parse_head
from ._resolve import HostsResolver as HostsResolver
from ._resolve import ResolveError as ResolveError
from ._resolve import Resolver as Resolver
from ._resolve import SystemResolver as SystemResolver
