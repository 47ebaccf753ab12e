"""Tests for sconnect_tools.http against a real local server (threads: this file only)."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from sconnect_tools import http as http_tool


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (name fixed by http.server)
        path = self.path
        port = self.server.server_address[1]
        if path == "/hello":
            self._send(200, "text/plain; charset=utf-8", "héllo".encode())
        elif path == "/latin1":
            self._send(200, "text/html; charset=ISO-8859-1", "caf\xe9".encode("latin-1"))
        elif path == "/weird-charset":
            self._send(200, "text/plain; charset=x-no-such", b"ok \xff")
        elif path == "/big":
            self._send(200, "application/octet-stream", b"a" * 100_000)
        elif path == "/missing":
            self._send(404, "text/plain", b"nope")
        elif path == "/headers":
            self._send(200, "text/plain", self.headers.get("User-Agent", "").encode())
        elif path == "/to-hello":
            self._redirect("/hello")
        elif path == "/to-ip":
            self._redirect(f"http://localhost:{port}/hello")
        elif path == "/to-evil":
            self._redirect("http://evil.example/steal")
        elif path == "/to-other-port":
            self._redirect("http://127.0.0.1:1/")
        elif path == "/to-ftp":
            self._redirect(f"ftp://127.0.0.1:{port}/file")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path.startswith("/chain/"):
            hops = int(path.rsplit("/", 1)[1])
            if hops == 0:
                self._send(200, "text/plain", b"end of chain")
            else:
                self._redirect(f"/chain/{hops - 1}")
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, "text/plain", b"late")
        else:
            self._send(500, "text/plain", b"unexpected path")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep test output clean


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A tool that stops reading (size limits, timeouts) resets its connection: expected
        # here, and socketserver would print a traceback for it at any time, even at exit.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 and a free port; yields 'http://127.0.0.1:PORT'."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def allow(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HTTP_ALLOWED_HOSTS", f"example.org, {server.removeprefix('http://')}")
    monkeypatch.setenv("HTTP_TIMEOUT_S", "5")
    return server


def test_get_happy_path(allow: str) -> None:
    assert http_tool.get(f"{allow}/hello") == {
        "url": f"{allow}/hello",
        "status": 200,
        "content_type": "text/plain",
        "body": "héllo",
        "truncated": False,
    }
    assert http_tool.get(f"{allow}/headers")["body"] == http_tool.USER_AGENT


def test_charset_and_truncation(allow: str) -> None:
    assert http_tool.get(f"{allow}/latin1")["body"] == "café"
    assert http_tool.get(f"{allow}/weird-charset")["body"] == "ok \ufffd"
    big = http_tool.get(f"{allow}/big", max_bytes=1000)
    assert big["truncated"] is True
    assert big["body"] == "a" * 1000


def test_error_status_is_a_result(allow: str) -> None:
    result = http_tool.get(f"{allow}/missing")
    assert result["status"] == 404
    assert result["body"] == "nope"


def test_redirect_to_allowed_host_is_followed(allow: str) -> None:
    result = http_tool.get(f"{allow}/to-hello")
    assert result["url"] == f"{allow}/hello"
    assert result["body"] == "héllo"
    assert http_tool.get(f"{allow}/chain/5")["body"] == "end of chain"


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/to-evil", PermissionError, "refusing redirect.*evil.example is not in the allowlist"),
        ("/to-ip", PermissionError, "localhost:\\d+ is not in the allowlist"),
        ("/to-other-port", PermissionError, "127.0.0.1:1 is not in the allowlist"),
        ("/to-ftp", PermissionError, "only http and https"),
        ("/to-file", PermissionError, "only http and https"),
        ("/chain/6", ConnectionError, "too many redirects"),
        ("/loop", ConnectionError, "too many redirects"),
    ],
)
def test_bad_redirects_are_refused(
    allow: str, path: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        http_tool.get(f"{allow}{path}")


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("http://evil.example/", PermissionError, "evil.example is not in the allowlist"),
        ("http://example.org:8080/", PermissionError, "example.org:8080 is not in"),
        ("https://sub.example.org/", PermissionError, "not in the allowlist"),
        ("ftp://example.org/file", ValueError, "only http and https"),
        ("file:///etc/passwd", ValueError, "only http and https"),
        ("example.org", ValueError, "only http and https"),
        ("http://user:pw@example.org/", ValueError, "user name or password"),
        ("http:///nohost", ValueError, "no host"),
        ("http://example.org:99999/", ValueError, "invalid port"),
        ("http://example.org/a b", ValueError, "spaces or control"),
        ("http://example.org/" + "a" * 3000, ValueError, "longer than"),
        ("", ValueError, "non-empty"),
    ],
)
def test_refuses_urls(allow: str, url: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        http_tool.get(url)


def test_empty_allowlist_refuses_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTP_ALLOWED_HOSTS", raising=False)
    with pytest.raises(PermissionError, match="HTTP_ALLOWED_HOSTS setting is empty"):
        http_tool.get("https://example.org/")
    monkeypatch.setenv("HTTP_ALLOWED_HOSTS", " , ")
    with pytest.raises(PermissionError, match="no hosts are allowed"):
        http_tool.get("https://example.org/")


def test_allowlist_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = http_tool._allowed_hosts
    check = http_tool._check_url
    allowed = parse("Example.ORG, *.example.net, api.test:8443, [::1]:8080")
    for url in [
        "https://example.org/x",
        "http://EXAMPLE.org./",
        "https://a.b.example.net/",
        "https://api.test:8443/",
        "http://[::1]:8080/",
    ]:
        check(url, allowed)
    for url in [
        "https://example.net/",  # wildcard does not cover the bare domain
        "https://badexample.net/",
        "https://api.test/",
        "https://example.org:444/",
        "http://[::1]/",
    ]:
        with pytest.raises(PermissionError):
            check(url, allowed)
    for bad in ["http://x.org", "x.org/path", "x.org:port", "user@x.org"]:
        with pytest.raises(ValueError, match="HTTP_ALLOWED_HOSTS entry"):
            parse(bad)


def test_unreachable_host_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HTTP_ALLOWED_HOSTS", f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"could not reach 127.0.0.1:{port}"):
        http_tool.get(f"http://127.0.0.1:{port}/")


def test_timeout(allow: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_TIMEOUT_S", "0.2")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer within 0.2 s"):
        http_tool.get(f"{allow}/slow")
    assert time.monotonic() - started < 1.2
    monkeypatch.setenv("HTTP_TIMEOUT_S", "never")
    with pytest.raises(ValueError, match="HTTP_TIMEOUT_S"):
        http_tool.get(f"{allow}/hello")


def test_max_bytes_is_checked(allow: str) -> None:
    for bad in [0, 1024 * 1024 + 1, True, "10"]:
        with pytest.raises(ValueError, match="max_bytes"):
            http_tool.get(f"{allow}/hello", max_bytes=bad)  # type: ignore[arg-type]


def test_proxy_variables_are_ignored(allow: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    assert http_tool.get(f"{allow}/hello")["body"] == "héllo"


def test_runs_in_sandbox_python(run_tool, server: str) -> None:
    env = {"HTTP_ALLOWED_HOSTS": server.removeprefix("http://")}
    ok = run_tool("http", "get", {"url": f"{server}/to-hello"}, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.result["status"] == 200
    assert ok.result["body"] == "héllo"
    redirected = run_tool("http", "get", {"url": f"{server}/to-evil"}, env=env)
    assert redirected.returncode == 1
    assert redirected.stderr.startswith("PermissionError: refusing redirect")
    nothing_allowed = run_tool("http", "get", {"url": f"{server}/hello"})
    assert nothing_allowed.returncode == 1
    assert "HTTP_ALLOWED_HOSTS" in nothing_allowed.stderr
