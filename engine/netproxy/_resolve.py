"""Name resolution for the egress proxy: the system's resolver, or a fixed hosts map.

The proxy resolves every name itself, once per connection, checks the addresses and
connects to the one it checked, so a name that changes its answer between two lookups
(DNS rebinding) cannot steer a connection to an address that was never checked.

`SystemResolver` calls getaddrinfo in a worker thread (it blocks); `HostsResolver`
answers from a map given in the proxy's config, never from /etc/hosts: tests map a
name to 127.0.0.1 this way, and a list of answers per name gives one answer per
lookup (the last repeats), which is how a test plays a rebinding name.

Error handling: `resolve` raises `ResolveError` (an OSError) when the name has no
address; callers bound the time with a cancel scope.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs
import trio

from ._allow import IPAddress, parse_address

MAX_ADDRESSES = 16


class ResolveError(OSError):
    """The name could not be resolved to any address."""


class Resolver(Protocol):
    """Anything that turns a host name into addresses (at most MAX_ADDRESSES)."""

    async def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]: ...


@attrs.frozen
class SystemResolver:
    """getaddrinfo in a worker thread (abandoned on cancellation: it cannot be interrupted)."""

    async def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        try:
            infos = await trio.to_thread.run_sync(
                lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), abandon_on_cancel=True
            )
        except (OSError, UnicodeError) as exc:
            raise ResolveError(f"{host} could not be resolved: {getattr(exc, 'strerror', None) or exc}") from None
        found: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = parse_address(str(sockaddr[0]))
            if address is not None and address not in found:
                found.append(address)
        if not found:
            raise ResolveError(f"{host} has no address")
        return tuple(found[:MAX_ADDRESSES])


@attrs.define(eq=False)
class HostsResolver:
    """A fixed map: name -> addresses, or name -> a sequence of answers, one per lookup.

    ``{"allowed.test": ["127.0.0.1"]}`` always answers 127.0.0.1;
    ``{"rebind.test": [["203.0.113.9"], ["127.0.0.1"]]}`` answers 203.0.113.9 first
    and 127.0.0.1 from then on. Names not in the map do not resolve. ``lookups``
    counts the lookups per name.
    """

    hosts: Mapping[str, Sequence[str] | Sequence[Sequence[str]]]
    lookups: dict[str, int] = attrs.field(factory=dict)

    async def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        await trio.lowlevel.checkpoint()
        name = host.lower().rstrip(".")
        answers = self.hosts.get(name)
        if not answers:
            raise ResolveError(f"{host} could not be resolved: not in the proxy's hosts map")
        count = self.lookups.get(name, 0)
        self.lookups[name] = count + 1
        if all(isinstance(answer, str) for answer in answers):
            chosen: Sequence[str] = answers  # type: ignore[assignment]
        else:
            chosen = answers[min(count, len(answers) - 1)]  # type: ignore[assignment]
        found = tuple(address for text in chosen if (address := parse_address(str(text))) is not None)
        if not found:
            raise ResolveError(f"{host} has no address")
        return found[:MAX_ADDRESSES]
