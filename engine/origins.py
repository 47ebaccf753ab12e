"""Origins an ``api://`` host may reach: ``host``, ``host:port`` or ``scheme://host[:port]``.

Shared by the config checks (is an entry well formed?) and the api:// runtime
(may this request or redirect go there?), so both read an entry the same way:

- ``https://example.com:8443``: exactly that scheme, host and port;
  ``https://example.com``: that scheme on its default port (443);
- ``example.com:8443``: that host and port, over http or https;
- ``example.com``: that host on the default port of the request's scheme
  (80 for http, 443 for https) — never any other port.

Hosts compare case-insensitively; IPv6 literals are written in brackets
(``[::1]:8080``).  No entry ever matches every port of a host.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import attrs

DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    """An allowlist entry that is not ``host``, ``host:port`` or ``scheme://host[:port]``."""


@attrs.frozen
class Origin:
    """One allowed origin; ``scheme`` None means http or https, ``port`` None the scheme's default."""

    scheme: str | None
    host: str
    port: int | None

    def allows(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether a request to ``scheme://host:port`` (port None: the scheme's default) may go."""
        if scheme not in DEFAULT_PORTS or (self.scheme is not None and scheme != self.scheme):
            return False
        wanted = port if port is not None else DEFAULT_PORTS[scheme]
        allowed = self.port if self.port is not None else DEFAULT_PORTS[scheme]
        return host.lower() == self.host and wanted == allowed

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{host}:{self.port}" if self.port is not None else host
        return f"{self.scheme}://{text}" if self.scheme else text


def parse_origin(text: str) -> Origin:
    """The origin an allowlist entry names; raises :class:`OriginError` saying what is wrong."""
    spelled = text if "://" in text else f"//{text}"
    try:
        parts = urlsplit(spelled)
        port = parts.port
    except ValueError as exc:
        raise OriginError(f"{text!r} is not a host, host:port or scheme://host[:port] ({exc})") from None
    scheme = parts.scheme or None
    if scheme is not None and scheme not in DEFAULT_PORTS:
        raise OriginError(f"{text!r}: only http and https origins can be allowed")
    if not parts.hostname or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise OriginError(f"{text!r} is not a host, host:port or scheme://host[:port] (no path, no user)")
    if port == 0:
        raise OriginError(f"{text!r}: port 0 is not a port")
    if scheme is not None and port is None:
        port = DEFAULT_PORTS[scheme]
    return Origin(scheme, parts.hostname.lower(), port)


def url_origin(url: str) -> Origin:
    """The exact origin of ``url`` (scheme, host and effective port)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise OriginError(f"{url!r} is not an http or https URL with a host")
    try:
        port = parts.port
    except ValueError as exc:
        raise OriginError(f"{url!r}: {exc}") from None
    return Origin(scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme])
