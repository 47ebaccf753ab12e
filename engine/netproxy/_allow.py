"""Where a tool may connect: the entries of a tool's ``sandbox.network`` list, parsed and matched.

An entry is one of:

- ``"api.github.com"`` — that name, on ports 80 and 443;
- ``"api.github.com:8443"`` — that name on that port only;
- ``"*.example.org"`` / ``"*.example.org:443"`` — any name below ``example.org``
  (not ``example.org`` itself); ``*`` is allowed only as the whole first label;
- ``"203.0.113.7:5432"`` / ``"[2001:db8::1]:443"`` — that address, asked for by
  address (a CONNECT to the raw IP); naming it is the explicit consent, so any range
  (loopback, private) is allowed this way;
- ``{host: intranet.corp, port: 8443, addresses: ["10.0.0.0/8"]}`` — a name (or
  wildcard) whose resolved addresses must lie in the listed ranges; this is how a name
  may reach a loopback, link-local or private address.

A name entry without ``addresses`` reaches only globally routable addresses: the
proxy resolves the name itself and refuses loopback, link-local, private, shared,
reserved, multicast and unspecified ones (``ipaddress``'s ``is_global``).

Error handling: `Allowlist.parse` raises `AllowlistError` (a ValueError) naming the
entry's index and what is wrong, so the config loader can point at its line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = frozenset({80, 443})
MAX_ENTRIES = 256
MAX_ADDRESSES = 64
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_EXAMPLES = "e.g. 'api.github.com', 'api.github.com:443', '*.example.org'"


class AllowlistError(ValueError):
    """One entry of a network list is malformed; ``index`` is its position (None: the list)."""

    def __init__(self, index: int | None, message: str) -> None:
        super().__init__(message)
        self.index = index


@attrs.frozen
class Destination:
    """One allowed destination. ``host`` is lower case without a trailing dot; a
    wildcard keeps its leading ``*.``; an address entry holds the address as text."""

    kind: Literal["name", "wildcard", "address"]
    host: str
    ports: frozenset[int]
    # explicit ranges: for a name, where it may resolve to (empty: global addresses
    # only); for an address entry, the address itself
    addresses: tuple[IPNetwork, ...] = ()

    def names(self, host: str) -> bool:
        """Whether ``host`` (lower case, no trailing dot) is the host this entry names."""
        if self.kind == "address":
            address = parse_address(host)
            return address is not None and address in self.addresses[0]
        if self.kind == "wildcard":
            suffix = self.host[1:]  # ".example.org"
            return host.endswith(suffix) and len(host) > len(suffix)
        return host == self.host

    def reaches(self, address: IPAddress, public: tuple[IPNetwork, ...] = ()) -> bool:
        """Whether a connection for this entry may go to ``address``."""
        if self.addresses:
            return any(address in network for network in self.addresses)
        return is_public(address, public)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        ports = "" if self.ports == DEFAULT_PORTS else ":" + ",".join(map(str, sorted(self.ports)))
        ranges = ""
        if self.addresses and self.kind != "address":
            ranges = f" (addresses {', '.join(map(str, self.addresses))})"
        return f"{host}{ports}{ranges}"


@attrs.frozen
class Allowlist:
    """A tool's allowed destinations, in the order written."""

    entries: tuple[Destination, ...]

    @classmethod
    def parse(cls, raw: Iterable[Any]) -> Allowlist:
        """Parse the YAML list; AllowlistError on the first malformed entry."""
        items = list(raw)
        if not items:
            raise AllowlistError(None, "an empty list allows nothing: write false for no network")
        if len(items) > MAX_ENTRIES:
            raise AllowlistError(None, f"at most {MAX_ENTRIES} destinations")
        entries = []
        for index, item in enumerate(items):
            try:
                entries.append(parse_entry(item))
            except ValueError as exc:
                raise AllowlistError(index, str(exc)) from None
        return cls(tuple(entries))

    def match(self, host: str, port: int) -> tuple[Destination | None, str]:
        """(the first entry allowing ``host:port``, "") or (None, why not)."""
        host = host.lower().rstrip(".")
        named = [entry for entry in self.entries if entry.names(host)]
        for entry in named:
            if port in entry.ports:
                return entry, ""
        if named:
            ports = sorted({port for entry in named for port in entry.ports})
            return None, f"port {port} is not allowed for {host} (allowed: {', '.join(map(str, ports))})"
        if parse_address(host) is not None:
            return None, f"address {host} is not in the tool's network list (a raw address needs an entry of its own)"
        return None, f"{host} is not in the tool's network list"


def is_public(address: IPAddress, public: tuple[IPNetwork, ...] = ()) -> bool:
    """Globally routable (not loopback, link-local, private, shared, reserved,
    multicast or unspecified), or inside one of ``public`` (a test's stand-ins)."""
    if any(address in network for network in public):
        return True
    return address.is_global and not address.is_multicast


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_entry(item: Any) -> Destination:
    """One entry (a string or a mapping); ValueError saying what is wrong."""
    if isinstance(item, str):
        host, ports = _split_port(item)
        return _destination(host, ports, ())
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"host", "port", "addresses"})
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(unknown)} (allowed: host, port, addresses)")
        name = item.get("host")
        if not isinstance(name, str):
            raise ValueError("host must be a string")
        host = name
        port = item.get("port")
        ports = DEFAULT_PORTS if port is None else frozenset({_port(port, text=False)})
        raw_ranges = item.get("addresses", ())
        if not isinstance(raw_ranges, list | tuple) or not raw_ranges:
            raise ValueError("addresses must be a non-empty list of addresses or ranges (e.g. 10.0.0.0/8)")
        if len(raw_ranges) > MAX_ADDRESSES:
            raise ValueError(f"at most {MAX_ADDRESSES} addresses")
        ranges = tuple(_network(value) for value in raw_ranges)
        if parse_address(host) is not None:
            raise ValueError(f"{host!r} is an address: write it as a string entry ('{host}:PORT')")
        return _destination(host, ports, ranges)
    raise ValueError(f"{item!r} is not a destination ({_EXAMPLES})")


def _split_port(item: str) -> tuple[str, frozenset[int]]:
    text = item.strip()
    if not text:
        raise ValueError(f"an empty destination ({_EXAMPLES})")
    if text != item or any(char.isspace() or ord(char) < 0x20 for char in text):
        raise ValueError(f"{item!r} contains spaces or control characters")
    if "://" in text or "/" in text or "?" in text or "@" in text:
        raise ValueError(f"{item!r} is a URL, not a host: write the host alone ({_EXAMPLES})")
    if parse_address(text) is not None and not text.startswith("["):
        return text, DEFAULT_PORTS  # a bare address (IPv6 without brackets included)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{item!r}: an IPv6 address in brackets needs its ']'")
        host, rest = text[1:end], text[end + 1 :]
        if parse_address(host) is None:
            raise ValueError(f"{item!r}: {host!r} in brackets is not an IPv6 address")
        if not rest:
            return host, DEFAULT_PORTS
        if not rest.startswith(":"):
            raise ValueError(f"{item!r}: expected ':PORT' after ']'")
        return host, frozenset({_port(rest[1:])})
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, DEFAULT_PORTS
    if not host:
        raise ValueError(f"{item!r} has no host before ':'")
    return host, frozenset({_port(port)})


def _port(value: Any, *, text: bool = True) -> int:
    """A port from ``host:PORT`` text (``text``) or a YAML integer."""
    number = value
    if text and isinstance(value, str) and value.isdigit() and value.isascii() and len(value) <= 5:
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        raise ValueError(f"port {value!r} is not a number from 1 to 65535")
    return number


def _network(value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise ValueError(f"address {value!r} is not a string such as '10.0.0.0/8' or '127.0.0.1'")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"address {value!r} is not an address or range: {exc}") from None


def _destination(host: str, ports: frozenset[int], ranges: tuple[IPNetwork, ...]) -> Destination:
    address = parse_address(host)
    if address is not None:
        return Destination("address", str(address), ports, (ipaddress.ip_network(address),))
    name = host.lower().rstrip(".")
    if not name.isascii():
        raise ValueError(f"{host!r}: write an international name in its ASCII (xn--) form")
    wildcard = name.startswith("*.")
    body = name[2:] if wildcard else name
    if "*" in body:
        raise ValueError(f"{host!r}: '*' is allowed only as the whole first label, e.g. '*.example.org'")
    labels = body.split(".")
    if not body or len(body) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{host!r} is not a host name ({_EXAMPLES})")
    if wildcard and len(labels) < 2:
        raise ValueError(f"{host!r}: a wildcard needs a domain of at least two labels, e.g. '*.example.org'")
    if labels[-1].isdigit():
        raise ValueError(f"{host!r} is neither a host name nor an IP address")
    return Destination("wildcard" if wildcard else "name", name, ports, ranges)
