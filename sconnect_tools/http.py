"""Fetch a web page with HTTP GET, only from hosts the tool's YAML allows.

``get(url, max_bytes=65536)`` returns::

    {"url": "https://example.org/", "status": 200, "content_type": "text/html",
     "body": "<!doctype html>...", "truncated": false}

``url`` in the result is the final URL after redirects. A 4xx/5xx answer is a result
too (its ``status`` and body are returned), not an error.

Configuration comes from the environment, which the sandbox clears except for what the
tool's YAML sets:

- ``HTTP_ALLOWED_HOSTS``: comma-separated entries. ``example.org`` allows that host on
  the scheme's default port (80 for http, 443 for https); ``example.org:8080`` allows
  exactly that port; ``*.example.org`` allows any subdomain (not the bare domain) on the
  default port, ``*.example.org:8443`` on that port. IPv6 addresses go in brackets,
  ``[::1]:8080``. Names compare case-insensitively. Empty or unset: every URL is refused.
- ``HTTP_TIMEOUT_S``: seconds for the whole request, connect to last byte (default 10).

Only ``http`` and ``https`` URLs without user:password are fetched. Redirects are
followed at most 5 times and only to allowed hosts (checked before each hop). With
``HTTP_ALLOWED_HOSTS`` set, proxy variables are ignored: that allowlist is about where
the request really goes.

Without ``HTTP_ALLOWED_HOSTS``, the tool relies on the engine's egress proxy (its YAML
gives ``sandbox.network`` a list of destinations; the sandbox sets ``HTTPS_PROXY`` /
``HTTP_PROXY``): every request and every redirect hop goes through the proxy, which
allows only the listed destinations; a refusal raises ``PermissionError``. With
neither, every URL is refused. The body
(at most ``max_bytes``, 1 to 1 MiB) is decoded with the charset the response declares,
else UTF-8, invalid bytes replaced; ``truncated`` says whether more was sent.

Error handling: bad arguments raise ``ValueError``; a host or redirect outside the
allowlist raises ``PermissionError``; an unreachable host, TLS failure, broken response
or too many redirects raise ``ConnectionError``; running out of time raises
``TimeoutError``. Messages name the URL, not internal details.
"""

from __future__ import annotations

import codecs
import http.client
import math
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import IO, NamedTuple

__all__ = ["get"]

MAX_BODY_BYTES = 1024 * 1024
MAX_URL_CHARS = 2048
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT_S = 10.0
USER_AGENT = "scalytics-connect-http/0.1"

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Allowed(NamedTuple):
    host: str  # lower case, no brackets; a leading "*." means any subdomain
    port: int | None  # None: the scheme's default port


def get(url: str, max_bytes: int = 65536) -> dict[str, object]:
    """GET ``url`` from an allowlisted host; see the module docstring."""
    if type(max_bytes) is not int or not 1 <= max_bytes <= MAX_BODY_BYTES:
        raise ValueError(f"max_bytes must be a whole number from 1 to {MAX_BODY_BYTES}")
    allowed = _allowed_hosts(os.environ.get("HTTP_ALLOWED_HOSTS", ""))
    proxies = {} if allowed else _egress_proxies()
    timeout_s = _timeout()
    _check_url(url, allowed, proxied=bool(proxies))

    deadline = time.monotonic() + timeout_s
    opener = urllib.request.OpenerDirector()
    # Built by hand rather than build_opener(): no ProxyHandler (env proxies would
    # route around the allowlist), no file:/ftp:/data: handlers.
    for handler in (
        *([urllib.request.ProxyHandler(proxies)] if proxies else []),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _RedirectHandler(allowed, proxied=bool(proxies)),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    request = urllib.request.Request(
        url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    )
    try:
        try:
            response = opener.open(request, timeout=timeout_s)
        except urllib.error.HTTPError as exc:
            response = exc  # an HTTP error status is still an answer with a body
        with response:
            status = response.status  # HTTPError has .status too (= its code)
            headers = response.headers
            if proxies and str(headers.get("Proxy-Status", "")).startswith("sconnect;"):
                raise PermissionError(f"the egress proxy refused {_host_of(response.url)}: {_proxy_details(headers)}")
            final_url = response.url
            data, truncated = _read_body(response, max_bytes, deadline, url)
    except TimeoutError:
        raise TimeoutError(f"{url} did not answer within {timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise TimeoutError(f"{url} did not answer within {timeout_s:g} s") from None
        if proxies and "Tunnel connection failed: 403" in str(reason):
            raise PermissionError(f"the egress proxy refused {_host_of(url)}: not in the tool's network list") from None
        raise ConnectionError(f"could not reach {_host_of(url)}: {_describe(reason)}") from None
    except (http.client.HTTPException, OSError) as exc:
        if isinstance(exc, (PermissionError, ConnectionError)) and exc.errno is None:
            raise  # ours, from the redirect handler
        raise ConnectionError(f"could not read from {_host_of(url)}: {_describe(exc)}") from None

    charset = headers.get_content_charset() or "utf-8"
    try:
        decoder = codecs.getincrementaldecoder(charset)("replace")
    except LookupError:  # a charset Python does not know: fall back rather than fail
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return {
        "url": final_url,
        "status": status,
        "content_type": headers.get_content_type() if headers.get("Content-Type") else None,
        "body": decoder.decode(data, final=not truncated),
        "truncated": truncated,
    }


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an allowed http(s) URL, at most MAX_REDIRECTS times."""

    # Our own hop count below raises first, with a clearer message than urllib's.
    max_redirections = MAX_REDIRECTS + 1
    max_repeats = MAX_REDIRECTS + 1

    def __init__(self, allowed: tuple[_Allowed, ...], proxied: bool = False) -> None:
        self._allowed = allowed
        self._proxied = proxied

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
    ) -> object:
        # urllib refuses a redirect to a non-http(s)/ftp scheme with an HTTPError that
        # would read as a plain 3xx answer; check the target first so it reads as what
        # it is, and so an ftp: target is refused too.
        location = headers.get("location") or headers.get("uri")
        if location:
            try:
                self._check(req, urllib.parse.urljoin(req.full_url, location))
            except PermissionError:
                fp.close()  # nobody else will read the refused answer
                raise
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        hops = getattr(req, "_sconnect_hops", 0) + 1
        if hops > MAX_REDIRECTS:
            raise ConnectionError(
                f"too many redirects (more than {MAX_REDIRECTS}); last one to {newurl}"
            )
        self._check(req, newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new._sconnect_hops = hops  # type: ignore[attr-defined]
        return new

    def _check(self, req: urllib.request.Request, newurl: str) -> None:
        try:
            _check_url(newurl, self._allowed, proxied=self._proxied)
        except (PermissionError, ValueError) as exc:
            raise PermissionError(f"refusing redirect from {req.full_url}: {exc}") from None


def _read_body(
    response: IO[bytes], max_bytes: int, deadline: float, url: str
) -> tuple[bytes, bool]:
    # The socket timeout bounds each read, not the whole body; a server trickling one
    # byte at a time is stopped by this deadline instead.
    chunks: list[bytes] = []
    remaining = max_bytes + 1  # one byte more tells us whether the body was cut
    while remaining > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} sent its body too slowly")
        chunk = response.read(min(remaining, 16384))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    data = b"".join(chunks)
    return data[:max_bytes], len(data) > max_bytes


def _check_url(url: object, allowed: tuple[_Allowed, ...], *, proxied: bool = False) -> None:
    if not isinstance(url, str) or not url:
        raise ValueError("url must be a non-empty string such as 'https://example.org/'")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"url is longer than {MAX_URL_CHARS} characters")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise ValueError("url must not contain spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"only http and https URLs are allowed, not {parts.scheme or 'no'!s}:")
    if parts.username is not None or parts.password is not None:
        raise ValueError("URLs with a user name or password are not allowed")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url {url!r} has an invalid port") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"url {url!r} has no host")
    if not allowed:
        if proxied:
            return  # the egress proxy decides, for this hop and every redirect
        raise PermissionError(
            "no hosts are allowed: the tool's HTTP_ALLOWED_HOSTS setting is empty "
            "and it has no egress proxy (a sandbox.network list)"
        )
    effective_port = port if port is not None else _DEFAULT_PORTS[scheme]
    if not any(_matches(entry, host, effective_port, scheme) for entry in allowed):
        shown = host if port is None else f"{host}:{port}"
        raise PermissionError(
            f"host {shown} is not in the allowlist ({_describe_allowed(allowed)})"
        )


def _matches(entry: _Allowed, host: str, port: int, scheme: str) -> bool:
    wanted_port = entry.port if entry.port is not None else _DEFAULT_PORTS[scheme]
    if port != wanted_port:
        return False
    if entry.host.startswith("*."):
        return host.endswith(entry.host[1:]) and len(host) > len(entry.host) - 1
    return host == entry.host


def _allowed_hosts(raw: str) -> tuple[_Allowed, ...]:
    entries = []
    for item in _split(raw):
        parts = urllib.parse.urlsplit("//" + item)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"HTTP_ALLOWED_HOSTS entry {item!r} has an invalid port") from None
        host = (parts.hostname or "").rstrip(".")
        if not host or parts.path or parts.query or parts.username is not None:
            raise ValueError(
                f"HTTP_ALLOWED_HOSTS entry {item!r} is not a host or host:port "
                "(e.g. 'example.org', 'api.example.org:8443', '*.example.org')"
            )
        entries.append(_Allowed(host.lower(), port))
    return tuple(entries)


def _egress_proxies() -> dict[str, str]:
    """The egress proxy the sandbox set (HTTPS_PROXY / HTTP_PROXY, either case), or {}."""
    found = {}
    for scheme in ("http", "https"):
        value = os.environ.get(f"{scheme}_proxy") or os.environ.get(f"{scheme.upper()}_PROXY")
        if value:
            found[scheme] = value
    return found


def _proxy_details(headers: http.client.HTTPMessage) -> str:
    status = str(headers.get("Proxy-Status", ""))
    marker = 'details="'
    start = status.find(marker)
    if start < 0:
        return "not in the tool's network list"
    return status[start + len(marker) :].rstrip('"').replace('\\"', '"')[:300]


def _split(raw: str) -> Iterable[str]:
    return (item.strip() for item in raw.split(",") if item.strip())


def _timeout() -> float:
    raw = os.environ.get("HTTP_TIMEOUT_S", "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"HTTP_TIMEOUT_S={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"HTTP_TIMEOUT_S={raw!r} must be a positive number of seconds")
    return value


def _describe_allowed(allowed: tuple[_Allowed, ...]) -> str:
    shown = [e.host if e.port is None else f"{e.host}:{e.port}" for e in allowed]
    return "allowed: " + ", ".join(shown)


def _host_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc or url


def _describe(reason: object) -> str:
    if isinstance(reason, socket.gaierror):
        return "name could not be resolved"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
