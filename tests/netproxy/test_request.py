"""Parsing a proxy request head (engine/netproxy/_request.py): what goes upstream for
plain HTTP, and the strictness on everything else (the proxy tests cover the answers)."""

from __future__ import annotations

import pytest

from engine.netproxy import BadRequest, parse_head


def test_connect() -> None:
    request = parse_head(b"CONNECT Api.Example.org.:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (request.method, request.host, request.port, request.tunnel) == ("CONNECT", "api.example.org", 443, True)
    assert parse_head(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n").host == "2001:db8::1"


def test_plain_http_goes_upstream_in_origin_form_without_proxy_headers() -> None:
    request = parse_head(
        b"POST http://example.org:8080/a/b?q=1 HTTP/1.1\r\nHost: spoofed\r\nProxy-Authorization: x\r\n"
        b"Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n"
    )
    assert (request.method, request.host, request.port, request.tunnel) == ("POST", "example.org", 8080, False)
    assert request.upstream_head == (
        b"POST /a/b?q=1 HTTP/1.1\r\nHost: example.org:8080\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
    )
    assert parse_head(b"GET http://example.org HTTP/1.0\r\n\r\n").upstream_head.startswith(b"GET / HTTP/1.1\r\n")
    assert parse_head(b"GET http://example.org?x HTTP/1.1\r\n\r\n").upstream_head.startswith(b"GET /?x HTTP/1.1")


@pytest.mark.parametrize(
    "head",
    [
        b"", b"\r\n\r\n", b"GET http://a.org/ HTTP/2\r\n\r\n", b"GET  http://a.org/ HTTP/1.1\r\n\r\n",
        b"G(T http://a.org/ HTTP/1.1\r\n\r\n", b"GET ftp://a.org/ HTTP/1.1\r\n\r\n",
        b"GET http://a.org/#frag HTTP/1.1\r\n\r\n", b"GET http://user:pw@a.org/ HTTP/1.1\r\n\r\n",
        b"GET http://a.org:80x/ HTTP/1.1\r\n\r\n", b"GET http://:80/ HTTP/1.1\r\n\r\n",
        b"CONNECT a.org:443 HTTP/1.1\r\n folded: header\r\n\r\n", b"CONNECT a.org:443 HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"CONNECT a%2eorg:443 HTTP/1.1\r\n\r\n", b"CONNECT a.org:443 HTTP/1.1\r\nX: \xff\r\n\r\n",
    ],
)  # fmt: skip
def test_malformed_heads_are_refused(head: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_head(head)
