"""Parsing a proxy request head, without I/O: the CONNECT line or an absolute-form
HTTP request line, and its headers.

Strict on purpose: ASCII only, ``HTTP/1.0`` or ``HTTP/1.1``, at most `MAX_HEADERS`
header lines, no obsolete line folding; the caller caps the head's size before it gets
here. ``https://`` in a request line is refused (a client asks for TLS with CONNECT).

Error handling: `parse_head` raises `BadRequest` (a ValueError) with a short reason
that is safe to send back and to record.
"""

from __future__ import annotations

import re

import attrs

MAX_HEADERS = 100
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
    "te", "trailer", "upgrade",
})  # fmt: skip


class BadRequest(ValueError):
    """The request head is not one this proxy accepts."""


@attrs.frozen
class ProxyRequest:
    """One parsed request: where to, and (plain HTTP) what to send there."""

    method: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    # for plain HTTP: the head to send upstream (origin-form, Connection: close)
    upstream_head: bytes = b""

    @property
    def tunnel(self) -> bool:
        return self.method == "CONNECT"


def parse_head(head: bytes) -> ProxyRequest:
    """Parse a head ending in CRLF CRLF (the terminator may be absent)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("the request is not ASCII") from None
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise BadRequest("empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not _TOKEN.match(parts[0]):
        raise BadRequest("malformed request line")
    method, target, _version = parts
    headers = _headers(lines[1:])
    if method == "CONNECT":
        host, port = _authority(target, default_port=None)
        return ProxyRequest("CONNECT", host, port)
    lowered = target.lower()
    if lowered.startswith("https://"):
        raise BadRequest("https:// URLs go through CONNECT")
    if not lowered.startswith("http://"):
        raise BadRequest("the request target must be an absolute http:// URL")
    rest = target[len("http://") :]
    cut = min((index for index in (rest.find("/"), rest.find("?")) if index >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:] or "/"
    if path.startswith("?"):
        path = "/" + path
    if "#" in path or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in path):
        raise BadRequest("malformed request target")
    host, port = _authority(authority, default_port=80)
    host_header = authority.rsplit("@", 1)[-1]
    kept = [f"{name}: {value}" for name, value in headers if name.lower() not in _HOP_BY_HOP and name.lower() != "host"]
    upstream = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", *kept, "Connection: close", "", ""]
    return ProxyRequest(method, host, port, "\r\n".join(upstream).encode("ascii"))


def _headers(lines: list[str]) -> list[tuple[str, str]]:
    if len(lines) > MAX_HEADERS:
        raise BadRequest(f"more than {MAX_HEADERS} header lines")
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        control = any(ord(char) < 0x20 and char != "\t" or ord(char) == 0x7F for char in value)
        if not sep or not _TOKEN.match(name) or control:
            raise BadRequest("malformed header line")
        headers.append((name, value.strip()))
    return headers


def _authority(text: str, *, default_port: int | None) -> tuple[str, int]:
    if "@" in text:
        raise BadRequest("user information in the target is not accepted")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadRequest("malformed IPv6 address in the target")
        host, rest = text[1:end], text[end + 1 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, rest = text, ""
        else:
            rest = ":" + port_text
    if rest:
        port_text = rest[1:]
        if not rest.startswith(":") or not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise BadRequest("malformed port in the target")
        port = int(port_text)
    elif default_port is None:
        raise BadRequest("CONNECT needs host:port")
    else:
        port = default_port
    host = host.lower().rstrip(".")
    bad_char = any(char in "/\\?#%" or ord(char) <= 0x20 or ord(char) >= 0x7F for char in host)
    if not host or not 1 <= port <= 65535 or bad_char or len(host) > 253:
        raise BadRequest("malformed host in the target")
    return host, port
