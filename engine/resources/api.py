"""``api://NAME/path``: GETs against an allowlisted base URL, through path templates.

Values from the path are percent-encoded into the route's target; requests and
redirects may reach only the host's ``allowed_hosts`` (redirects are followed
by hand, each hop checked); header values come from named environment
variables, never from config; the body is cut at ``max_size``; answers are
cached for ``cache`` seconds when set.  Cancellation closes the request.
"""

from __future__ import annotations

import os
import time
from urllib.parse import quote, urljoin, urlsplit

import httpx

from ..config.model import ApiResource
from .content import Content, Template, as_content
from .errors import Refused, TooLarge, Unavailable, UpstreamTimeout
from .templates import _PLACEHOLDER, host_templates, route_for
from .uri import ResourceURI

_MAX_REDIRECTS = 5


class ApiHost:
    def __init__(self, config: ApiResource) -> None:
        self.config = config
        self.allowed = set(config.allowed_hosts) or {urlsplit(config.base_url).hostname or ""}
        self._cache: dict[str, tuple[float, Content]] = {}

    def templates(self) -> list[Template]:
        return host_templates(f"api://{self.config.name}", self.config.routes, self.config.description)

    async def read(self, uri: ResourceURI) -> Content:
        route, values = route_for(uri.key, self.config.routes, uri.segments)
        target = _PLACEHOLDER.sub(lambda m: quote(str(values[m[1]]), safe=""), route.target)
        return await self._get(str(uri), self.config.base_url.rstrip("/") + target)

    async def _get(self, uri: str, url: str) -> Content:
        cached = self._cache.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        headers = {}
        for header, variable in self.config.headers_from_env.items():
            value = os.environ.get(variable)
            if value is None:
                raise Unavailable(f"api://{self.config.name}: the environment variable {variable} is not set")
            headers[header] = value
        limit = int(self.config.max_size)
        try:
            async with httpx.AsyncClient(timeout=float(self.config.timeout), follow_redirects=False, trust_env=False) as client:
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
            raise UpstreamTimeout(f"api://{self.config.name}: the upstream did not answer within {float(self.config.timeout):g}s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"api://{self.config.name}: {type(exc).__name__}: {exc}") from None
        truncated = len(raw) > limit
        if truncated and self.config.on_oversize == "refuse":
            raise TooLarge(f"{uri}: the upstream answered more than {limit} bytes")
        content = as_content(uri, bytes(raw[:limit]), truncated, mime)
        if self.config.cache > 0:
            self._cache[url] = (time.monotonic() + float(self.config.cache), content)
        return content

    def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        named = f"{host}:{parts.port}" if parts.port else host
        if parts.scheme not in ("http", "https") or (host not in self.allowed and named not in self.allowed):
            raise Refused(f"api://{self.config.name}: {parts.scheme}://{named} is not in this host's allowlist")
