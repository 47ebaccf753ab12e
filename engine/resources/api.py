"""``api://NAME/path``: GETs against an allowlisted base URL, through path templates.

Values from the path are percent-encoded into the route's target; requests and
redirects may reach only the host's ``allowed_hosts`` origins — by default the
base URL's exact origin (scheme, host and port) — with redirects followed by
hand, each hop checked (see :mod:`engine.origins`); header values come from
named environment variables, never from config; the body is cut at
``max_size``; answers are cached for ``cache`` seconds when set, in a cache
bounded by ``cache_entries`` and ``cache_size`` (:mod:`.cache`).
Cancellation closes the request.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import trio

from ..config.model import ApiResource
from ..config.resource_kinds import ResourceKind, register
from ..config.yamldoc import Document
from ..errors import ConfigProblem
from ..origins import Origin, OriginError, parse_origin, url_origin
from .cache import ResponseCache
from .content import Content, Template, as_content
from .errors import Refused, TooLarge, Unavailable, UpstreamTimeout
from .host import HostContext
from .templates import _PLACEHOLDER, check_template, host_templates, route_for
from .uri import ResourceURI

SCHEMA = {
    "required": ["base_url", "routes"],
    "properties": {
        "base_url": {"type": "string", "pattern": "^https?://", "description": "Base URL every route is joined to."},
        "allowed_hosts": {"$ref": "common.json#/$defs/string_list", "description":
                          "Origins requests and redirects may reach: host (the scheme's default port), host:port, "
                          "or scheme://host[:port]. Default: the base URL's exact origin (scheme, host, port)."},
        "headers_from_env": {"type": "object",
                             "additionalProperties": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                             "description": "Header name -> environment variable holding its value (never the "
                             "value itself). Default: none."},
        "timeout": {"$ref": "common.json#/$defs/duration", "description": "Default: 10s."},
        "max_size": {"$ref": "common.json#/$defs/size", "description": "Default: 1MiB."},
        "on_oversize": {"enum": ["truncate", "refuse"],
                        "description": "What happens past max_size. Default: truncate."},
        "cache": {"$ref": "common.json#/$defs/duration",
                  "description": "How long a response is reused; 0s disables. Default: 0s."},
        "cache_entries": {"type": "integer", "minimum": 1, "maximum": 100000,
                          "description": "Responses kept at most; the least recently used go first. Default: 256."},
        "cache_size": {"$ref": "common.json#/$defs/size",
                       "description": "Bytes of responses kept at most. Default: 16MiB."},
        "routes": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False, "required": ["path", "target"],
                "properties": {
                    "path": {"type": "string", "minLength": 1, "description": "Path template, e.g. current/{city}."},
                    "target": {"type": "string", "pattern": "^/", "description": "Path (and query) on the base URL "
                               "with the same placeholders, percent-encoded when filled."},
                    "description": {"type": "string"},
                    "params": {"$ref": "common.json#/$defs/param_types"},
                },
            },
        },
    },
}


def check(resource: ApiResource, doc: Document, root: Path) -> list[ConfigProblem]:
    problems = []
    origins = []
    for index, entry in enumerate(resource.allowed_hosts):
        try:
            origins.append(parse_origin(entry))
        except OriginError as exc:
            problems.append(doc.problem(["allowed_hosts", index], str(exc)))
    try:
        base = url_origin(resource.base_url)
    except OriginError as exc:
        problems.append(doc.problem(["base_url"], str(exc)))
    else:
        complete = len(origins) == len(resource.allowed_hosts)
        reached = any(origin.allows(base.scheme or "", base.host, base.port) for origin in origins)
        if origins and complete and not reached:
            problems.append(doc.problem(["allowed_hosts"], f"the base URL's origin {base} is not in allowed_hosts"))
    for index, route in enumerate(resource.routes):
        used = set(_PLACEHOLDER.findall(route.target))
        problems += check_template(doc, ["routes", index], route.path, route.params, used)
    return problems


def build(resource: ApiResource, context: HostContext) -> ApiHost:
    return ApiHost(resource)

_MAX_REDIRECTS = 5


# Loading the CA bundle takes ~20 ms: done once, in a worker thread, not on the event loop at
# every read that misses the cache (httpx builds a fresh context for each client otherwise).
# The same context as httpx's default for trust_env=False (certifi's bundle): no variable read.
@functools.cache
def _tls() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context(trust_env=False)


class ApiHost:
    def __init__(self, config: ApiResource, *, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        # Entries were checked at load; the base URL's own origin is the default, never "any port".
        self.allowed: tuple[Origin, ...] = (
            tuple(parse_origin(entry) for entry in config.allowed_hosts) or (url_origin(config.base_url),)
        )
        self.cache = ResponseCache(float(config.cache), config.cache_entries, int(config.cache_size),
                                   **({"clock": clock} if clock else {}))

    def templates(self) -> list[Template]:
        return host_templates(f"api://{self.config.name}", self.config.routes, self.config.description)

    async def read(self, uri: ResourceURI) -> Content:
        route, values = route_for(uri.key, self.config.routes, uri.segments)
        target = _PLACEHOLDER.sub(lambda m: quote(str(values[m[1]]), safe=""), route.target)
        return await self._get(str(uri), self.config.base_url.rstrip("/") + target)

    async def _get(self, uri: str, url: str) -> Content:
        import httpx  # only where a read needs it: loading the configuration must not pay for it

        cached = self.cache.get(url)
        if cached is not None:
            return cached
        headers = {}
        for header, variable in self.config.headers_from_env.items():
            value = os.environ.get(variable)
            if value is None:
                raise Unavailable(f"api://{self.config.name}: the environment variable {variable} is not set")
            headers[header] = value
        limit = int(self.config.max_size)
        tls = await trio.to_thread.run_sync(_tls)
        try:
            timeout = float(self.config.timeout)
            async with httpx.AsyncClient(
                timeout=timeout, follow_redirects=False, trust_env=False, verify=tls
            ) as client:
                for _hop in range(_MAX_REDIRECTS + 1):
                    self._check_host(url)
                    async with client.stream("GET", url, headers=headers) as response:
                        if response.is_redirect:
                            url = urljoin(url, response.headers.get("location", ""))
                            continue
                        if response.status_code >= 400:
                            raise Unavailable(f"api://{self.config.name}: the upstream answered {response.status_code}")
                        raw = bytearray()
                        async for chunk in response.aiter_bytes():
                            raw += chunk
                            if len(raw) > limit:
                                break
                        mime = response.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
                    break
                else:
                    raise Unavailable(f"api://{self.config.name}: more than {_MAX_REDIRECTS} redirects")
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                f"api://{self.config.name}: the upstream did not answer within {float(self.config.timeout):g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"api://{self.config.name}: {type(exc).__name__}: {exc}") from None
        truncated = len(raw) > limit
        if truncated and self.config.on_oversize == "refuse":
            raise TooLarge(f"{uri}: the upstream answered more than {limit} bytes")
        content = as_content(uri, bytes(raw[:limit]), truncated, mime)
        self.cache.put(url, content)
        return content

    def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise Refused(f"api://{self.config.name}: a redirect named an invalid port") from None
        host = parts.hostname or ""
        if not any(origin.allows(parts.scheme, host, port) for origin in self.allowed):
            allowed = ", ".join(map(str, self.allowed))
            target = str(Origin(parts.scheme, host, port))
            raise Refused(f"api://{self.config.name}: {target} is not in this host's allowlist ({allowed})")


KIND = register(ResourceKind("api", ApiResource, SCHEMA, check, build, scheme="api"))
